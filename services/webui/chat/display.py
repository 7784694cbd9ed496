"""What the chat pages show: view models for agents, models, messages and the context gauge.

The page's event streams (a reply as it is written) are in page_stream.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import bindparam, func, select

from services.gateway.registry import Agent, Model

from ..approvals import approvals_for, open_approval
from ..extensions import db
from ..fleet import health, registry
from ..models import LIVE_STATUSES, ConversationSession, Message, sane_usage, usage_columns, utcnow
from ..rendering import render_message
from . import branch_view, tree
from .context import ContextPlan, plan_context, store_counts

RECENT_SESSIONS = 30
GAUGE_WARN = 0.60
GAUGE_FULL = 0.85

STATUS_LABELS = {
    "pending": "Waiting",
    "streaming": "Writing",
    "planning": "Planning",
    "executing": "Executing",
    "awaiting_approval": "Awaiting approval",
    "complete": "Complete",
    "cancelled": "Cancelled",
    "error": "Error",
    "interrupted": "Interrupted",
}


# ---- agents and models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentOption:
    agent: Agent
    depth: int
    role: str  # the badge: "root", or "reports to <parent name>"
    status: str  # "up" | "down"
    reason: str | None

    @property
    def agent_id(self) -> str:
        return self.agent.agent_id

    @property
    def is_up(self) -> bool:
        return self.status == "up"


@dataclass(frozen=True)
class AgentGroup:
    root: AgentOption
    members: list[AgentOption]  # the root first, then its descendants depth-first


def agent_groups() -> list[AgentGroup]:
    """The fleet as its hierarchy: one group per root agent, descendants indented below it."""
    fleet = registry()
    checker = health()
    groups: list[AgentGroup] = []
    seen: set[str] = set()

    def walk(agent: Agent, depth: int, out: list[AgentOption]) -> None:
        if agent.agent_id in seen:
            return
        seen.add(agent.agent_id)
        parent = fleet.get(agent.parent_role) if agent.parent_role else None
        result = checker.check(agent)
        out.append(
            AgentOption(
                agent=agent,
                depth=depth,
                role="root" if parent is None else f"reports to {parent.name}",
                status=result.status,
                reason=result.reason,
            )
        )
        for child in fleet.children(agent.agent_id):
            walk(child, depth + 1, out)

    for root in fleet.roots():
        members: list[AgentOption] = []
        walk(root, 0, members)
        groups.append(AgentGroup(root=members[0], members=members))
    leftovers = [a for a in fleet.agents if a.agent_id not in seen]  # a parent outside the fleet
    if leftovers:
        members = []
        for agent in leftovers:
            walk(agent, 0, members)
        groups.append(AgentGroup(root=members[0], members=members))
    return groups


def find_option(groups: list[AgentGroup], agent_id: str | None) -> AgentOption | None:
    for group in groups:
        for option in group.members:
            if option.agent_id == agent_id:
                return option
    return None


def first_up(groups: list[AgentGroup]) -> AgentOption | None:
    for group in groups:
        for option in group.members:
            if option.is_up:
                return option
    return groups[0].members[0] if groups else None


def format_tokens(count: int) -> str:
    if count >= 1000 and count % 1024 == 0:
        return f"{count // 1024}k"
    if count >= 1000:
        return f"{count / 1000:.0f}k"
    return str(count)


def format_price(value: float) -> str:
    if value == int(value):
        return f"${int(value):,}"
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.4f}"


def format_cost(value: float) -> str:
    """What a reply or a total cost: to the hundredth of a cent below a cent, else to the cent."""
    return f"${value:.4f}" if value < 0.01 else f"${value:,.2f}"


def cost_line(prompt_tokens: int, completion_tokens: int, cost: float | None, unit: str = "") -> str:
    """Tokens in and out, and the cost when known: "1,234 in · 567 out · $0.0123" (with unit
    " tokens": "1,234 tokens in · ...")."""
    line = f"{prompt_tokens:,}{unit} in · {completion_tokens:,} out"
    return line + f" · {format_cost(cost)}" if isinstance(cost, (int, float)) else line


def model_label(model: Model) -> str:
    return (
        f"{model.name} · {format_tokens(model.context_window)} context · "
        f"{format_price(model.cost_per_1m_input)} in / {format_price(model.cost_per_1m_output)} out per 1M"
    )


# ---- the context gauge ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    used: int  # tokens sent with the next message: the history that fits (chat/context.py)
    window: int
    reserve: int = 0  # kept for the reply
    estimated: bool = False  # counted at ~4 characters a token, not by the model's tokenizer
    hidden: int = 0  # messages the agent no longer sees

    @property
    def share(self) -> float:
        return min(self.used / self.window, 1.0) if self.window else 0.0

    @property
    def percent(self) -> int:
        return round(self.share * 100)

    @property
    def level(self) -> str:
        return "full" if self.share >= GAUGE_FULL else "warn" if self.share >= GAUGE_WARN else "ok"

    @property
    def low(self) -> int:
        return int(self.window * GAUGE_WARN)

    @property
    def high(self) -> int:
        return int(self.window * GAUGE_FULL)


def session_plan(session: ConversationSession | None, model: Model) -> ContextPlan:
    """What the agent would receive with the next message; counts made for it are stored."""
    plan = plan_context(session.id if session is not None else None, model)
    store_counts(plan)
    return plan


def plan_gauge(plan: ContextPlan) -> Gauge:
    return Gauge(plan.used, plan.window, plan.reserve, not plan.exact, plan.hidden_count)


# ---- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageView:
    """Everything the message partial needs, with no database object behind it."""

    id: str
    role: str
    content: str
    status: str
    agent_name: str = ""
    message_type: str = "chat"  # or "summary", "context_reset" (chat/context.py)
    session_id: str = ""
    usage: dict | None = None
    error: str | None = None
    created_at: datetime | None = None
    model: Model | None = None
    model_id: str | None = None
    html: Markup = field(default_factory=Markup)
    approvals: tuple = ()  # approvals.ApprovalView, oldest first
    steps: list = field(default_factory=list)  # the timeline: [{status, detail, at}] (chat/progress.py)
    last_output_at: str | None = None  # server time of the last token or status update, if known
    place: Any = None  # branch_view.Place: the action row and "‹ 2 / 3 ›" (None: no actions)

    def __post_init__(self):
        # Usage also arrives live from agents: numbers no arithmetic can use are ignored here.
        object.__setattr__(self, "usage", sane_usage(self.usage))

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def open_approval(self):
        """The request the reply waits on, if any (only a live reply can wait)."""
        return open_approval(self.approvals) if self.status == "awaiting_approval" else None

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status.replace("_", " ").capitalize())

    @property
    def usage_line(self) -> str | None:
        if not self.usage:
            return None
        if self.usage.get("reached_agent") is False:
            return "Never reached the agent · no charge"
        prompt = int(self.usage.get("prompt_tokens") or 0)
        completion = int(self.usage.get("completion_tokens") or 0)
        cost = self.usage.get("cost_usd")
        if not isinstance(cost, (int, float)) and self.model is not None:
            cost = self.model.cost_usd(prompt, completion)
        return cost_line(prompt, completion, cost, unit=" tokens")

    @property
    def model_name(self) -> str | None:
        """The model that wrote this reply: its name in the registry, else its id."""
        if self.role != "assistant":
            return None
        return self.model.name if self.model is not None else self.model_id

    @property
    def note(self) -> str | None:
        """A sentence for a reply that did not complete, and what to do about it."""
        if self.status == "error":
            reason = (self.error or "The agent reported an error.").rstrip(".") + "."
            return f"{reason} Retry in a moment, or branch into a chat with another agent."
        if self.status == "interrupted":
            reason = (self.error or "The reply stream broke off.").rstrip(".") + "."
            return f"{reason} The text so far is kept; retry or continue it below."
        if self.status == "cancelled":
            return "Stopped. The text so far is kept."
        return None

    def rendered(self) -> "MessageView":
        if self.role != "assistant":
            return self
        return replace(self, html=render_message(self.id, self.content, final=not self.is_live))


def message_view(
    message: Message, agent_name: str, model: Model | None, approvals: tuple = (), place=None
) -> MessageView:
    return MessageView(
        id=message.id,
        role=message.role,
        content=message.content or "",
        status=message.status,
        agent_name=agent_name,
        message_type=message.message_type or "chat",
        session_id=message.session_id,
        usage=message.usage,
        error=message.error,
        created_at=message.created_at,
        model=model,
        model_id=message.model_id,
        approvals=approvals,
        steps=message.steps,
        place=place,
    ).rendered()


def session_messages(session: ConversationSession) -> list[MessageView]:
    """The current path of the session's tree (chat/tree.py), with each message's action row."""
    fleet = registry()
    agent = fleet.get(session.agent_id)
    # The current path only (chat/tree.py): other versions are reached with "‹ 2 / 3 ›".
    shape = tree.load(session)
    place = branch_view.placer(session, shape)
    rows = [
        row
        for row in tree.messages_of(shape.path())
        if row.role in ("user", "assistant") or row.message_type == "context_reset"
    ]
    asked = approvals_for(row.id for row in rows if row.role == "assistant")
    views = []
    for row in rows:
        model = agent.model(row.model_id or "") if agent else None
        views.append(message_view(row, session.agent_name, model, asked.get(row.id, ()), place(row.id, row.model_id)))
    return views


# ---- running cost ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostTotal:
    """A session's replies added up: tokens in and out, dollars, replies."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    replies: int = 0

    @property
    def line(self) -> str:
        return cost_line(self.prompt_tokens, self.completion_tokens, self.cost_usd)

    def plus(self, usage: dict | None) -> "CostTotal":
        """With one more reply's usage (a reply whose end the database may not hold yet)."""
        numbers = usage_columns(usage)
        return CostTotal(
            self.prompt_tokens + numbers["prompt_tokens"],
            self.completion_tokens + numbers["completion_tokens"],
            self.cost_usd + (numbers["cost_usd"] or 0.0),
            self.replies + 1,
        )


# Built once: building a statement again costs more than running it (SQLAlchemy works out its
# cache key each time, ~0.25 ms here), and the end of every streamed reply runs this one.
_SESSION_COST = select(
    func.coalesce(func.sum(Message.prompt_tokens), 0),
    func.coalesce(func.sum(Message.completion_tokens), 0),
    func.coalesce(func.sum(Message.cost_usd), 0.0),
    func.count(),
).where(Message.session_id == bindparam("session_id"), Message.role == "assistant")
_SESSION_COST_WITHOUT = _SESSION_COST.where(Message.id != bindparam("without"))


def session_cost(session_id: str, without: str | None = None) -> CostTotal:
    """The session's running total in one SUM over ix_messages_usage (no JSON parsed); a reply's
    cost the agent did not report counts as $0. `without`: leave out this reply."""
    if without is None:
        row = db.session.execute(_SESSION_COST, {"session_id": session_id}).one()
    else:
        row = db.session.execute(_SESSION_COST_WITHOUT, {"session_id": session_id, "without": without}).one()
    prompt, completion, cost, replies = row
    return CostTotal(int(prompt), int(completion), float(cost), int(replies))


def recent_sessions(user) -> list[ConversationSession]:
    return db.session.scalars(
        select(ConversationSession)
        .where(ConversationSession.user_id == user.id, ConversationSession.archived_at.is_(None))
        .order_by(ConversationSession.updated_at.desc())
        .limit(RECENT_SESSIONS)
    ).all()


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return ""
    seconds = max(((now or utcnow()) - moment).total_seconds(), 0)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 2 * 86400:
        return "yesterday"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)} days ago"
    return moment.strftime("%d %b %Y")
