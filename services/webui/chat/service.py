"""Sending a message: validation, the agent lock, saving first, then starting the run.

Shared by the JSON API and the page's form, so both enforce exactly the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from services.gateway.registry import Agent, Model

from ..attachments import parts as attachment_parts
from ..attachments import service as attachments
from ..errors import RequestError
from ..extensions import db
from ..fleet import registry
from ..models import ConversationSession, IdempotencyKey, Message, Run, new_id, utcnow
from ..ownership import owned_session
from ..runs import run_manager
from ..runs.driver import SEQ_HEADROOM
from . import tree
from .context import budget_of, conversation_plan, plan_messages, reply_reserve, store_counts, stored_count
from .tokens import counter_for

TITLE_CHARS = 80

sessions_table = ConversationSession.__table__
messages_table = Message.__table__
runs_table = Run.__table__
keys_table = IdempotencyKey.__table__
IDEMPOTENCY_KEY_CHARS = 128
NOT_COUNTED = {"token_count": None, "token_counter": None}


class ChatError(RequestError):
    """A message that cannot be sent or a run that cannot be stopped, and why."""


@dataclass
class SentMessage:
    """A saved turn: the rows as inserted, keyed by attribute name.

    The model objects are built on first use, so that building them happens after the agent
    has the request, and only for callers that render them (the JSON API needs the ids only).
    """

    session_row: dict
    user_row: dict
    reply_row: dict
    existing_session: ConversationSession | None = None
    repeated: bool = False  # an earlier send with the same idempotency key; nothing new saved
    # With send_message(launch_later=True): launches the reply's run (RunManager.launch_later).
    launch: Callable[[], None] | None = None

    @property
    def session_id(self) -> str:
        return self.session_row["id"]

    @property
    def reply_id(self) -> str:
        return self.reply_row["id"]

    @property
    def user_message_id(self) -> str:
        return self.user_row["id"]

    @cached_property
    def session(self) -> ConversationSession:
        return self.existing_session or ConversationSession(**self.session_row)

    @cached_property
    def user_message(self) -> Message:
        return Message(**self.user_row)

    @cached_property
    def reply(self) -> Message:
        return Message(**self.reply_row)


def resolve_agent(agent_id: str | None) -> Agent:
    if not agent_id or not isinstance(agent_id, str):
        raise ChatError(400, "Choose an agent (agent_id is missing).")
    agent = registry().get(agent_id)
    if agent is None:
        raise ChatError(404, f"There is no agent {agent_id!r}.")
    return agent


def resolve_model(agent: Agent, model_id: str | None) -> Model:
    if not model_id:
        return agent.models[0]
    model = agent.model(model_id) if isinstance(model_id, str) else None
    if model is None:
        raise ChatError(422, f"Agent {agent.agent_id} does not serve model {model_id!r}.")
    return model


def validate_content(content, *, with_files: bool = False) -> str:
    if with_files and (content is None or (isinstance(content, str) and not content.strip())):
        return ""  # files alone are a message
    if not isinstance(content, str) or not content.strip():
        raise ChatError(422, "Write a message before sending.")
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if len(content) > limit:
        raise ChatError(422, f"The message is {len(content):,} characters long; the limit is {limit:,}.")
    return content


def make_title(content: str) -> str:
    line = re.sub(r"\s+", " ", content).strip()
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def validate_idempotency_key(key) -> str | None:
    if key is None or key == "":
        return None
    if not isinstance(key, str) or len(key) > IDEMPOTENCY_KEY_CHARS or not key.isprintable() or not key.isascii():
        raise ChatError(400, f"An idempotency key is printable ASCII of at most {IDEMPOTENCY_KEY_CHARS} characters.")
    return key


def earlier_send(user, key: str | None) -> SentMessage | None:
    """The first answer to a send with this key, if there was one."""
    if key is None:
        return None
    row = db.session.execute(select(keys_table).where(keys_table.c.user_id == user.id, keys_table.c.key == key)).first()
    if row is None:
        return None
    session = db.session.get(ConversationSession, row.session_id)
    return SentMessage(
        {"id": row.session_id},
        {"id": row.user_message_id},
        {"id": row.reply_id},
        existing_session=session,
        repeated=True,
    )


def send_message(
    user,
    *,
    agent_id,
    model_id,
    content,
    session_id=None,
    idempotency_key=None,
    attachment_ids=None,
    launch_later=False,
) -> SentMessage:
    """Save the turn, then send it to the agent; or, with `launch_later`, leave that to the
    caller's `sent.launch()` (a request that answers with the reply's stream)."""
    key = validate_idempotency_key(idempotency_key)
    repeat = earlier_send(user, key)
    if repeat is not None:
        return repeat
    agent = resolve_agent(agent_id)
    model = resolve_model(agent, model_id)
    files = attachments.pick_for_message(user, attachment_ids, model)
    content = validate_content(content, with_files=bool(files))
    counts = check_fits(model, content, files)
    reply_id = new_id()
    session = owned_session(str(session_id)) if session_id else None
    manager = run_manager()
    # Registered before any write: nothing that may wait (a lock, a greenlet switch) happens
    # inside the write transaction below.
    live = manager.prepare(agent, reply_id, session.id if session else None, model.model_id)
    live.counter = counter_for(model)  # a chat reply is sent to the agent as its text
    try:
        sent = _save_turn(user, agent, model, content, session, reply_id, key, counts, files)
        live.session_id = sent.session_id
        plan = conversation_plan(sent.session_id if session is not None else None, sent.user_row, model, files)
        history = plan_messages(plan, sent.user_row, files)
    except IntegrityError:
        # The same key, sent twice at once: the other request saved the turn first.
        manager.abandon(live)
        db.session.rollback()
        repeat = earlier_send(user, key)
        if repeat is None:
            raise
        return repeat
    except BaseException:
        manager.abandon(live)
        db.session.rollback()
        raise
    if launch_later:
        store_counts(plan)
        sent.launch = manager.launch_later(live, history)
        return sent
    manager.launch(live, history)
    store_counts(plan)  # after the agent has the request
    return sent


def check_fits(model: Model, content: str, files=()) -> dict:
    """Refuse, before anything is saved, a message that alone (with its files) cannot fit the
    model's window; the message's own token count, to store with it."""
    counter = counter_for(model)
    counts = stored_count(content, counter)
    budget = budget_of(model)
    total = counts["token_count"] + attachment_parts.extra_tokens(files)
    if total > budget:
        kind = "" if counter.exact and not files else "about "
        what = "This message and its files come to" if files else "This message is"
        raise ChatError(
            422,
            f"{what} {kind}{total:,} tokens; {model.name} has a window of "
            f"{model.context_window:,} tokens, {reply_reserve(model.context_window):,} of them kept for the reply, "
            f"so a message can take at most {budget:,}. "
            + (
                "Attach fewer or smaller files, or pick a model with a larger window."
                if files
                else "Shorten it or pick a model with a larger window."
            ),
        )
    return counts


def _save_turn(
    user, agent: Agent, model: Model, content: str, session, reply_id: str, key: str | None, counts: dict, files=()
) -> SentMessage:
    """Claim the session, save the user's message, the pending reply and its run; commit.

    Core INSERTs of plain rows: the ORM's bulk path and building model objects here cost about
    0.45 ms more, all of it before the agent gets the request.
    """
    now = utcnow()
    if session is not None:
        if session.is_archived:
            raise ChatError(409, "This session is archived. Unarchive it to continue.")
        if session.agent_id != agent.agent_id:
            raise ChatError(
                409,
                f"This session belongs to agent {session.agent_id}; start a new chat to talk to {agent.agent_id}.",
            )
        claim_session(session, reply_id, model, now)
        parent_id = take_leaf(session, reply_id)
        session_row = {"id": session.id}
    else:
        session_row = {
            "id": new_id(),
            "user_id": user.id,
            "agent_id": agent.agent_id,
            "agent_name": agent.name,
            "parent_role": agent.parent_role,
            "model_id": model.model_id,
            "title": make_title(content or ", ".join(f.filename for f in files)),
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
            "active_run_id": reply_id,
            "current_leaf_id": reply_id,
        }
        parent_id = None
        db.session.execute(sessions_table.insert(), session_row)

    message = {
        "session_id": session_row["id"],
        "message_type": "chat",
        "agent_id": agent.agent_id,
        "usage_json": None,
        "error": None,
    }
    user_row = {
        **message,
        "id": new_id(),
        "parent_id": parent_id,
        "role": "user",
        "content": content,
        "status": "complete",
        "created_at": now,
        "completed_at": now,
        "model_id": None,
    }
    reply_row = {
        **message,
        "id": reply_id,
        "role": "assistant",
        "content": "",
        "status": "pending",
        "created_at": now + timedelta(microseconds=1),
        "completed_at": None,
        "model_id": model.model_id,  # the model can change within a session: each reply keeps its own
    }
    reply_row["parent_id"] = user_row["id"]
    db.session.execute(
        messages_table.insert(), [_message_columns(user_row) | counts, _message_columns(reply_row) | NOT_COUNTED]
    )
    attachments.link(user_row["id"], list(files))
    insert_run(reply_id, session_row["id"], agent, model, now)
    if key is not None:
        db.session.execute(
            keys_table.insert(),
            {
                "user_id": user.id,
                "key": key,
                "session_id": session_row["id"],
                "user_message_id": user_row["id"],
                "reply_id": reply_id,
                "created_at": now,
            },
        )
    db.session.commit()  # the user's message is saved before anything goes to the agent
    return SentMessage(session_row, user_row, reply_row, existing_session=session)


def claim_session(session: ConversationSession, run_id: str, model: Model, now) -> None:
    """Take the session's one-run-at-a-time lock for run_id (a conditional UPDATE), or 409."""
    claim = {"active_run_id": run_id, "updated_at": now, "model_id": model.model_id}
    claimed = db.session.execute(
        update(sessions_table)
        .where(sessions_table.c.id == session.id, sessions_table.c.active_run_id.is_(None))
        .values(**claim)
    ).rowcount
    if not claimed:
        raise ChatError(409, _busy_sentence(session))
    for name, value in claim.items():
        set_committed_value(session, name, value)


@contextmanager
def preparing_run(session: ConversationSession, agent: Agent, model: Model, run_id: str):
    """A run for `run_id` registered with the run manager and the session claimed for it (409 if
    busy): yields (live, now). The block writes the run's messages and row (insert_run) and commits;
    if it raises, the run is abandoned and the transaction rolled back. Launch after the block:
    run_manager().launch(live, messages)."""
    manager = run_manager()
    live = manager.prepare(agent, run_id, session.id, model.model_id)
    try:
        now = utcnow()
        claim_session(session, run_id, model, now)
        yield live, now
    except BaseException:
        manager.abandon(live)
        db.session.rollback()
        raise


def take_leaf(session: ConversationSession, message_id: str) -> str | None:
    """Put a new message at the end of the session's current path (chat/tree.py); the message
    it follows. The caller holds the session's claim, so no other write moves the leaf meanwhile."""
    tree.adopt(session)
    parent_id = session.current_leaf_id
    tree.set_leaf(session, message_id)
    return parent_id


def insert_run(run_id: str, session_id: str, agent: Agent, model: Model, now) -> None:
    db.session.execute(
        runs_table.insert(),
        {
            "message_id": run_id,
            "session_id": session_id,
            "agent_id": agent.agent_id,
            "model_id": model.model_id,
            "owner": run_manager().owner,
            "beat_at": now,
            "created_at": now,
            # No event above this can be sent before the run stores a higher one (runs/manager.py).
            "last_seq": SEQ_HEADROOM,
            "cancel_requested_at": None,
            "ended_at": None,
        },
    )


def _busy_sentence(session: ConversationSession) -> str:
    waiting = db.session.scalar(
        select(Message.id).where(
            Message.id == session.active_run_id,
            Message.status == "awaiting_approval",
        )
    )
    if waiting is not None:
        return (
            f"{session.agent_name} is waiting for your answer to its request above: "
            "approve or reject it (or stop the reply) before sending a message."
        )
    return "A reply is still being written in this session. Stop it or wait for it to finish."


def _message_columns(row: dict) -> dict:
    """A message row keyed by column name: the attribute usage_json is the column "usage"."""
    columns = dict(row)
    columns["usage"] = columns.pop("usage_json")
    return columns


def cancel_latest(session: ConversationSession) -> tuple[int, dict]:
    """Cancel the session's live run; a finished run answers with its final state, unchanged."""
    run = db.session.scalar(select(Run).where(Run.session_id == session.id).order_by(Run.created_at.desc()).limit(1))
    if run is None:
        raise ChatError(409, "Nothing has run in this session yet.")
    reply = db.session.get(Message, run.message_id)
    if run.ended_at is not None or not reply.is_live:
        return 200, {"message_id": reply.id, "status": reply.status}
    # Durable first: a driver that misses the bus's message still finds the flag.
    db.session.execute(
        update(runs_table)
        .where(runs_table.c.message_id == run.message_id, runs_table.c.cancel_requested_at.is_(None))
        .values(cancel_requested_at=utcnow())
    )
    db.session.commit()
    outcome = run_manager().cancel(run.message_id, registry().get(run.agent_id))
    if outcome == "ended":
        db.session.expire_all()
        reply = db.session.get(Message, run.message_id)
        return 200, {"message_id": reply.id, "status": reply.status}
    return 202, {"message_id": reply.id, "status": "cancelling"}
