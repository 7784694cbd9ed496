"""Sending a message: validation, the agent lock, saving first, then starting the run.

Shared by the JSON API and the page's form, so both enforce exactly the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from services.gateway.registry import Agent, Model

from ..errors import RequestError
from ..extensions import db
from ..fleet import registry
from ..models import ConversationSession, IdempotencyKey, Message, Run, new_id, utcnow
from ..ownership import owned_session
from ..runs import run_manager
from ..runs.driver import SEQ_HEADROOM
from . import tree

TITLE_CHARS = 80
# Leave room for the reply: the history sent to an agent uses at most this share of its window.
HISTORY_SHARE_OF_CONTEXT = 0.75

sessions_table = ConversationSession.__table__
messages_table = Message.__table__
runs_table = Run.__table__
keys_table = IdempotencyKey.__table__
IDEMPOTENCY_KEY_CHARS = 128


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


def validate_content(content) -> str:
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


def send_message(user, *, agent_id, model_id, content, session_id=None, idempotency_key=None) -> SentMessage:
    key = validate_idempotency_key(idempotency_key)
    repeat = earlier_send(user, key)
    if repeat is not None:
        return repeat
    agent = resolve_agent(agent_id)
    model = resolve_model(agent, model_id)
    content = validate_content(content)
    reply_id = new_id()
    session = owned_session(str(session_id)) if session_id else None
    manager = run_manager()
    # Registered before any write: nothing that may wait (a lock, a greenlet switch) happens
    # inside the write transaction below.
    live = manager.prepare(agent, reply_id, session.id if session else None, model.model_id)
    try:
        sent = _save_turn(user, agent, model, content, session, reply_id, key)
        live.session_id = sent.session_id
        history = (
            conversation_for_agent(sent.session_id, sent.user_row, model)
            if session is not None
            else [{"role": "user", "content": content}]
        )
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
    manager.launch(live, history)
    return sent


def _save_turn(user, agent: Agent, model: Model, content: str, session, reply_id: str, key: str | None) -> SentMessage:
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
        claim = {"active_run_id": reply_id, "updated_at": now, "model_id": model.model_id}
        claimed = db.session.execute(
            update(sessions_table)
            .where(sessions_table.c.id == session.id, sessions_table.c.active_run_id.is_(None))
            .values(**claim)
        ).rowcount
        if not claimed:
            raise ChatError(409, "A reply is still being written in this session. Stop it or wait for it to finish.")
        for name, value in claim.items():
            set_committed_value(session, name, value)
        tree.adopt(session)  # read after the claim: no other write can move the leaf now
        parent_id = session.current_leaf_id
        tree.set_leaf(session, reply_id)
        session_row = {"id": session.id}
    else:
        session_row = {
            "id": new_id(),
            "user_id": user.id,
            "agent_id": agent.agent_id,
            "agent_name": agent.name,
            "parent_role": agent.parent_role,
            "model_id": model.model_id,
            "title": make_title(content),
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
    }
    reply_row = {
        **message,
        "id": reply_id,
        "role": "assistant",
        "content": "",
        "status": "pending",
        "created_at": now + timedelta(microseconds=1),
        "completed_at": None,
    }
    reply_row["parent_id"] = user_row["id"]
    db.session.execute(messages_table.insert(), [_message_columns(user_row), _message_columns(reply_row)])
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


def insert_run(reply_id: str, session_id: str, agent: Agent, model: Model, now) -> None:
    db.session.execute(
        runs_table.insert(),
        {
            "message_id": reply_id,
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


def _message_columns(row: dict) -> dict:
    """A message row keyed by column name: the attribute usage_json is the column "usage"."""
    columns = dict(row)
    columns["usage"] = columns.pop("usage_json")
    return columns


def conversation_for_agent(session_id: str, new_message: dict, model: Model) -> list[dict]:
    """Earlier turns plus the new message (its row), newest kept first when the window is tight."""
    budget = int(model.context_window * HISTORY_SHARE_OF_CONTEXT * 4)  # ~4 characters a token
    turns = [{"role": "user", "content": new_message["content"]}]
    used = len(new_message["content"])
    # Exactly the current path (chat/tree.py), never the session's other branches.
    path = tree.path_ids(db.session.get(ConversationSession, session_id))
    earlier = db.session.execute(
        select(Message.role, Message.content)
        .where(
            Message.id.in_(path[-201:]),
            Message.id != new_message["id"],
            Message.role.in_(("user", "assistant")),
            Message.content != "",
        )
        .order_by(Message.created_at.desc())
        .limit(200)
    ).all()
    for role, text in earlier:
        used += len(text)
        if used > budget:
            break
        turns.append({"role": role, "content": text})
    turns.reverse()
    return turns


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
