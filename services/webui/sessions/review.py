"""The read-only review of one session: its transcript, per-message usage and cost, run outcomes
and session totals. Shared by the review page, the JSON API and the exports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from ..approvals import approvals_for
from ..chat import tree
from ..extensions import db
from ..models import LIVE_STATUSES, ConversationSession, Message, Run, User

TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
OUTCOME_LABELS = {
    "complete": "Completed",
    "cancelled": "Cancelled",
    "error": "Failed",
    "interrupted": "Interrupted",
}


@dataclass
class MessageView:
    message: Message
    run: Run | None
    usage: dict | None
    cost_usd: float | None
    cost_estimated: bool = False
    model_name: str | None = None  # the model that wrote this reply: its registry name, else its id
    approvals: tuple = ()  # approvals.ApprovalView: what the agent asked, and the answers

    @property
    def duration(self) -> timedelta | None:
        end = self.message.completed_at or (self.run.ended_at if self.run else None)
        return end - self.message.created_at if end else None

    @property
    def outcome(self) -> str | None:
        """How the run that wrote this reply ended, in words (None for messages without a run)."""
        message = self.message
        if message.role != "assistant":
            return None
        if message.status in LIVE_STATUSES:
            return f"Still running ({message.status.replace('_', ' ')})"
        if message.status == "cancelled" and self.run is not None and self.run.cancel_requested_at:
            return "Stopped by the user"
        label = OUTCOME_LABELS.get(message.status, message.status)
        return f"{label}: {message.error}" if message.error and message.status != "complete" else label


@dataclass
class Totals:
    messages: int = 0
    replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    cost_estimated: bool = False
    outcomes: Counter = field(default_factory=Counter)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None


@dataclass
class Review:
    """`messages`: every message of the session's tree, oldest first (totals count them all);
    `path`: the current path (chat/tree.py), which the page and the Markdown export show."""

    session: ConversationSession
    owner: str
    messages: list[MessageView]
    totals: Totals
    path: list[MessageView] = field(default_factory=list)
    parents: dict = field(default_factory=dict)  # message id → parent id, as the tree reads it

    @property
    def branched(self) -> bool:
        """Some messages are on other branches than the current path."""
        return len(self.path) < len(self.messages)

    @property
    def live(self) -> bool:
        return self.session.active_run_id is not None


def _prices(agent_id: str, model_id: str):
    try:
        from ..fleet import registry

        agent = registry().get(agent_id)
    except Exception:  # a remote registry that cannot answer: no estimates, no failure
        return None
    return agent.model(model_id) if agent is not None else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def build_review(session: ConversationSession) -> Review:
    owner = db.session.scalar(select(User.username).where(User.id == session.user_id)) or "?"
    messages = db.session.scalars(
        select(Message).where(Message.session_id == session.id).order_by(Message.created_at, Message.id)
    ).all()
    runs = {run.message_id: run for run in db.session.scalars(select(Run).where(Run.session_id == session.id))}
    asked = approvals_for(message.id for message in messages if message.role == "assistant")
    totals = Totals()
    views = []
    price_cache: dict = {}
    for message in messages:
        usage = message.usage
        run = runs.get(message.id)
        cost, estimated = None, False
        price_key = (
            run.agent_id if run else session.agent_id,
            message.model_id or (run.model_id if run else session.model_id),
        )
        model = None
        if message.role == "assistant" or usage:
            if price_key not in price_cache:
                price_cache[price_key] = _prices(*price_key)
            model = price_cache[price_key]
        if usage:
            cost = _number(usage.get("cost_usd"))
            if cost is None and (usage.get("prompt_tokens") or usage.get("completion_tokens")):
                if model is not None:
                    cost = model.cost_usd(
                        int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                    )
                    estimated = True
            for key in TOKEN_KEYS:
                setattr(totals, key, getattr(totals, key) + int(_number(usage.get(key)) or 0))
        if cost is not None:
            totals.cost_usd += cost
            totals.cost_estimated |= estimated
        totals.messages += 1
        if message.role == "assistant":
            totals.replies += 1
            totals.outcomes[message.status] += 1
        end = message.completed_at or message.created_at
        totals.started_at = min(filter(None, (totals.started_at, message.created_at)))
        totals.ended_at = max(filter(None, (totals.ended_at, end)))
        model_name = (model.name if model else message.model_id) if message.role == "assistant" else None
        views.append(
            MessageView(
                message=message,
                run=run,
                usage=usage,
                cost_usd=cost,
                cost_estimated=estimated,
                model_name=model_name,
                approvals=asked.get(message.id, ()),
            )
        )
    totals.cost_usd = round(totals.cost_usd, 8)
    by_id = {view.message.id: view for view in views}
    shape = tree.load(session)
    path = [by_id[i] for i in shape.path() if i in by_id]
    return Review(session=session, owner=owner, messages=views, totals=totals, path=path, parents=shape.parents())
