"""What the agent receives: the one plan that sending, the gauge and the page's marker share.

Given a session and a model, `plan_context` walks the history from the newest message back and
keeps messages while they fit the budget (the model's window less the reserve kept for the
reply). The kept messages are a contiguous tail: the first one that does not fit is the cut, and
so is a complete summary (which stands in for everything before it; it is sent, as a system
message, if it fits) and a "context_reset" divider (nothing before it is sent). The page shows a
marker at the cut, "The agent no longer sees the N messages above."

Token counts come from the model's tokenizer or the estimate (chat/tokens.py) and are stored per
message (messages.token_count), so a long session is tokenized once, not on every view. Only the
newest HISTORY_BOUND messages of the session's current path (chat/tree.py) are read; the plan
says when older ones exist. A message's attachments count with it (attachments/parts.py), and
`plan_messages` turns a plan into the request itself: the kept history, then the new message,
as content parts where files are attached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from services.gateway.registry import Model

from ..attachments import parts as attachment_parts
from ..attachments import service as attachments
from ..attachments.parts import extra_tokens_of_messages
from ..database import WRITE_WAIT_OPTION, DatabaseUnavailable
from ..extensions import db
from ..models import LIVE_STATUSES, ConversationSession, Message
from . import tree
from .tokens import Counter, counter_for

log = logging.getLogger("switchboard.context")

HISTORY_BOUND = 200  # the newest messages read for a plan; older ones are never sent
COUNTS_WRITE_WAIT_SECONDS = 0.25  # storing counts is a cache: never hold a page for it
SUMMARY_PREFIX = "Summary of the earlier conversation (it replaces the messages before it):\n\n"
SUMMARY_INSTRUCTION = (
    "Summarize the conversation so far for your own future reference: the goals, the decisions "
    "made, the facts and figures given, and the open questions. Write it as a concise briefing; "
    "it will replace the earlier messages in your context."
)
messages_table = Message.__table__


@dataclass
class PlanItem:
    id: str
    role: str
    message_type: str
    status: str
    content: str
    tokens: int | None = None  # None: not counted (older than the cut, never sent)
    sent: bool = False

    @property
    def agent_message(self) -> dict:
        if self.message_type == "summary":
            return {"role": "system", "content": SUMMARY_PREFIX + self.content}
        return {"role": self.role, "content": self.content}

    @property
    def counts_as_hidden(self) -> bool:
        """A message a person would miss: a turn or a summary, not a divider or a failed summary."""
        return self.message_type == "chat" or (self.message_type == "summary" and self.status == "complete")


@dataclass
class ContextPlan:
    window: int
    reserve: int
    counter: str  # the tokenizer's name, or "estimate"
    exact: bool
    items: list[PlanItem] = field(default_factory=list)  # oldest first, within HISTORY_BOUND
    new_tokens: int = 0  # the message being sent, if any
    older_unread: bool = False  # the session has messages older than HISTORY_BOUND
    cut_reason: str | None = None  # "budget" | "summary" | "context_reset" | None
    counted: dict[str, tuple[int, str]] = field(default_factory=dict)  # new counts to store

    history_bound: int = HISTORY_BOUND

    @property
    def budget(self) -> int:
        return max(self.window - self.reserve, 0)

    @property
    def sent(self) -> list[PlanItem]:
        return [item for item in self.items if item.sent]

    @property
    def used(self) -> int:
        """Tokens sent: the kept history plus the new message."""
        return sum(item.tokens or 0 for item in self.items if item.sent) + self.new_tokens

    @property
    def first_sent_id(self) -> str | None:
        return next((item.id for item in self.items if item.sent), None)

    @property
    def hidden_count(self) -> int:
        """Messages above the cut that the agent does not see (summarized ones included)."""
        return sum(1 for item in self.items if not item.sent and item.counts_as_hidden)

    @property
    def cut_before(self) -> str | None:
        """The first message sent, when messages above it are not ("end" when none is sent)."""
        if not (self.hidden_count or self.older_unread):
            return None
        return self.first_sent_id or "end"

    @property
    def marker_before(self) -> str | None:
        """Where the page shows the marker; a fresh-context divider is its own marker."""
        return None if self.cut_reason == "context_reset" else self.cut_before

    def agent_messages(self) -> list[dict]:
        return [item.agent_message for item in self.items if item.sent]

    def to_dict(self) -> dict:
        return {
            "window": self.window,
            "reserve": self.reserve,
            "budget": self.budget,
            "used": self.used,
            "tokenizer": self.counter,
            "exact": self.exact,
            "cut": {
                "reason": self.cut_reason,
                "before_message_id": self.first_sent_id if self.cut_before else None,
                "hidden_messages": self.hidden_count,
                "older_unread": self.older_unread,
            },
            "messages": [
                {
                    "id": item.id,
                    "role": item.role,
                    "message_type": item.message_type,
                    "tokens": item.tokens,
                    "sent": item.sent,
                }
                for item in self.items
            ],
        }


def reply_reserve(window: int, setting: float | None = None) -> int:
    """Tokens kept for the reply: CONTEXT_REPLY_RESERVE below 1 is a share of the window, else tokens."""
    value = current_app.config["CONTEXT_REPLY_RESERVE"] if setting is None else setting
    reserve = int(window * value) if value < 1 else int(value)
    return min(reserve, max(window - 1, 0))


def budget_of(model: Model) -> int:
    return max(model.context_window - reply_reserve(model.context_window), 0)


# The newest messages of the path that count, built once (every send and reply end runs it, and
# building a statement costs SQLAlchemy more than running it). No message has the id "".
_HISTORY = (
    select(
        Message.id,
        Message.role,
        Message.message_type,
        Message.status,
        Message.content,
        Message.token_count,
        Message.token_counter,
    )
    .where(
        Message.session_id == bindparam("session_id"),
        # A person's message may be files only (no text); an empty reply adds nothing.
        (Message.role.in_(("user", "assistant")) & ((Message.content != "") | (Message.role == "user")))
        | (Message.message_type == "context_reset"),
        Message.id.in_(bindparam("ids", expanding=True)),
        Message.id != bindparam("exclude_id"),
    )
    .order_by(Message.created_at.desc(), Message.id.desc())
    .limit(HISTORY_BOUND + 1)
)


def plan_context(
    session_id: str | None,
    model: Model,
    *,
    new_text: str | None = None,
    exclude_id: str | None = None,
    counter: Counter | None = None,
    extra_tokens=extra_tokens_of_messages,
) -> ContextPlan:
    """The plan for the next request to the agent: the history that fits, and where it is cut."""
    counter = counter or counter_for(model)
    window = model.context_window
    plan = ContextPlan(window, reply_reserve(window), counter.name, counter.exact)
    if new_text is not None:
        plan.new_tokens = counter.message_tokens(new_text)
    if session_id is None:
        return plan
    # Only the current path (chat/tree.py) is sent, never another branch; its tail is enough.
    path = tree.path_ids(db.session.get(ConversationSession, session_id))
    tail = path[-2 * HISTORY_BOUND :]
    rows = db.session.execute(_HISTORY, {"session_id": session_id, "ids": tail, "exclude_id": exclude_id or ""}).all()
    plan.older_unread = len(rows) > HISTORY_BOUND or len(path) > len(tail)
    newest_first = [
        PlanItem(row.id, row.role, row.message_type, row.status, row.content) for row in rows[:HISTORY_BOUND]
    ]
    stored = {row.id: (row.token_count, row.token_counter) for row in rows}
    extra = extra_tokens([item.id for item in newest_first])
    left = plan.budget - plan.new_tokens
    for item in newest_first:
        if item.message_type == "context_reset":
            plan.cut_reason = "context_reset"
            break
        if item.message_type == "summary" and item.status != "complete":
            continue  # a summary still being written, or one that failed, stands in for nothing
        count, by = stored[item.id]
        if count is None or by != counter.name:
            text = item.agent_message["content"]
            count = counter.message_tokens(text)
            if item.status not in LIVE_STATUSES:
                plan.counted[item.id] = (count, counter.name)
        item.tokens = count + extra.get(item.id, 0)
        if item.tokens > left:
            plan.cut_reason = "budget"
            break
        item.sent = True
        left -= item.tokens
        if item.message_type == "summary":
            plan.cut_reason = "summary"
            break
    else:
        if plan.older_unread:
            plan.cut_reason = "budget"
    plan.items = list(reversed(newest_first))
    return plan


def store_counts(plan: ContextPlan) -> None:
    """Keep the counts made for this plan, so the next one reads them. Best effort: a busy
    database only means counting again next time."""
    if not plan.counted:
        return
    try:
        db.session.commit()  # end the read transaction: the write below gets its own, briefly waited for
        connection = db.session.connection(execution_options={WRITE_WAIT_OPTION: COUNTS_WRITE_WAIT_SECONDS})
        for message_id, (count, by) in plan.counted.items():
            connection.execute(
                update(messages_table)
                .where(messages_table.c.id == message_id)
                .values(token_count=count, token_counter=by)
            )
        db.session.commit()
    except (SQLAlchemyError, DatabaseUnavailable):
        db.session.rollback()
        log.info("token counts not stored this time (database busy)")
    plan.counted = {}


def stored_count(content: str, counter: Counter) -> dict:
    """The token columns of a message saved now, counted as the plan counts it."""
    return {"token_count": counter.message_tokens(content), "token_counter": counter.name}


# ---- what one request sends --------------------------------------------------------------------


def conversation_plan(session_id: str | None, new_message: dict, model: Model, files=()):
    """The plan of what the agent receives with the new message (chat/context.py): one home.
    Attachments count against the budget (attachments/parts.py)."""
    plan = plan_context(
        session_id,
        model,
        new_text=new_message["content"],
        exclude_id=new_message["id"],
    )
    plan.new_tokens += attachment_parts.extra_tokens(files)
    return plan


def plan_messages(plan, new_message: dict, files=()) -> list[dict]:
    """What the agent is sent for this plan: the history it keeps, then the new message; a
    message with attachments as content parts."""
    sent = plan.sent
    files_of = attachments.by_message(item.id for item in sent if item.role == "user")
    messages = []
    for item in sent:
        message = item.agent_message
        if files_of.get(item.id):
            message["content"] = attachment_parts.agent_content(message["content"], files_of[item.id])[0]
        messages.append(message)
    content = attachment_parts.agent_content(new_message["content"], list(files))[0]
    return messages + [{"role": "user", "content": content}]


def conversation_for_agent(session_id: str, new_message: dict, model: Model) -> list[dict]:
    """Earlier turns that fit plus the new message: exactly what send_message sends."""
    files = attachments.by_message([new_message["id"]]).get(new_message["id"], [])
    return plan_messages(conversation_plan(session_id, new_message, model, files), new_message, files)
