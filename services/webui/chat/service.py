"""Sending a message: validation, the agent lock, saving first, then starting the run.

Shared by the JSON API and the page's form, so both enforce exactly the same rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import insert, inspect, select, update
from sqlalchemy.orm.attributes import set_committed_value

from services.gateway.registry import Agent, Model

from ..errors import RequestError
from ..extensions import db
from ..fleet import registry
from ..models import ConversationSession, Message, Run, new_id, utcnow
from ..ownership import owned_session
from . import runs

TITLE_CHARS = 80
# Leave room for the reply: the history sent to an agent uses at most this share of its window.
HISTORY_SHARE_OF_CONTEXT = 0.75


class ChatError(RequestError):
    """A message that cannot be sent or a run that cannot be stopped, and why."""


@dataclass
class SentMessage:
    session: ConversationSession
    user_message: Message
    reply: Message


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


def send_message(user, *, agent_id, model_id, content, session_id=None) -> SentMessage:
    agent = resolve_agent(agent_id)
    model = resolve_model(agent, model_id)
    content = validate_content(content)
    reply_id = new_id()
    session = owned_session(str(session_id)) if session_id else None
    # Registered before any write: nothing that may wait (a lock, a greenlet switch) happens
    # inside the write transaction below.
    live = runs.prepare_run(agent, reply_id, session.id if session else None)
    try:
        sent = _save_turn(user, agent, model, content, session, reply_id)
        live.session_id = sent.session.id
        history = (
            conversation_for_agent(sent.session.id, sent.user_message, model)
            if session is not None
            else [{"role": "user", "content": content}]
        )
    except BaseException:
        runs.abandon_run(live)
        db.session.rollback()
        raise
    runs.launch_run(current_app._get_current_object(), live, model.model_id, history)
    return sent


def _save_turn(user, agent: Agent, model: Model, content: str, session, reply_id: str) -> SentMessage:
    """Claim the session, save the user's message, the pending reply and its run; commit.

    Plain bulk INSERTs rather than the ORM's unit of work: this is on the path to the first token,
    and the returned objects are only read.
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
            update(ConversationSession)
            .where(ConversationSession.id == session.id, ConversationSession.active_run_id.is_(None))
            .values(**claim)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not claimed:
            raise ChatError(409, "A reply is still being written in this session. Stop it or wait for it to finish.")
        for key, value in claim.items():
            set_committed_value(session, key, value)
    else:
        session = ConversationSession(
            id=new_id(), user_id=user.id, agent_id=agent.agent_id, agent_name=agent.name,
            parent_role=agent.parent_role, model_id=model.model_id, title=make_title(content),
            created_at=now, updated_at=now, archived_at=None, active_run_id=reply_id,
        )
        db.session.execute(insert(ConversationSession), [_columns(session)])

    user_message = Message(
        id=new_id(), session_id=session.id, role="user", message_type="chat", agent_id=agent.agent_id,
        content=content, status="complete", usage_json=None, error=None, created_at=now, completed_at=now,
    )
    reply = Message(
        id=reply_id, session_id=session.id, role="assistant", message_type="chat", agent_id=agent.agent_id,
        content="", status="pending", usage_json=None, error=None,
        created_at=now + timedelta(microseconds=1), completed_at=None,
    )
    db.session.execute(insert(Message), [_columns(user_message), _columns(reply)])
    db.session.execute(insert(Run), [{
        "message_id": reply_id, "session_id": session.id, "agent_id": agent.agent_id,
        "model_id": model.model_id, "owner": runs.OWNER, "beat_at": now, "created_at": now, "last_seq": 0,
    }])
    db.session.commit()  # the user's message is saved before anything goes to the agent
    return SentMessage(session=session, user_message=user_message, reply=reply)


def _columns(obj) -> dict:
    """The column values of a transient model object, keyed by attribute name."""
    return {attr.key: getattr(obj, attr.key) for attr in inspect(type(obj)).column_attrs}


def conversation_for_agent(session_id: str, new_message: Message, model: Model) -> list[dict]:
    """Earlier turns plus the new message, newest kept first when the context window is tight."""
    budget = int(model.context_window * HISTORY_SHARE_OF_CONTEXT * 4)  # ~4 characters a token
    turns = [{"role": "user", "content": new_message.content}]
    used = len(new_message.content)
    earlier = db.session.execute(
        select(Message.role, Message.content)
        .where(
            Message.session_id == session_id,
            Message.id != new_message.id,
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
    run = db.session.scalar(
        select(Run).where(Run.session_id == session.id).order_by(Run.created_at.desc()).limit(1)
    )
    if run is None:
        raise ChatError(409, "Nothing has run in this session yet.")
    reply = db.session.get(Message, run.message_id)
    if run.ended_at is not None or not reply.is_live:
        return 200, {"message_id": reply.id, "status": reply.status}
    runs.request_cancel(run.message_id, registry().get(run.agent_id))
    return 202, {"message_id": reply.id, "status": "cancelling"}
