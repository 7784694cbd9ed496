"""Conversation control: regenerate, retry, continue, edit, switch siblings, branch, hand off.

Every action that starts a reply claims the session's active run exactly as a send does
(service._save_turn): one reply at a time, 409 otherwise. New messages hang under a parent in
the session's tree (chat/tree.py) and the current leaf moves to the new reply, so what the agent
is sent next is exactly the path the page shows.

- regenerate: a new reply to the same user message (a sibling of the old reply), any model of
  the session's agent; retry is regenerate with the reply's own model, for error, interrupted
  and cancelled replies.
- continue: for an interrupted or cancelled reply with text, a new reply under it (the page
  shows the partial reply, then its continuation); the agent gets the path including the
  partial reply plus CONTINUE_INSTRUCTION.
- edit: a new user message beside the old one (same parent), and a reply to it.
- branch: a new session of the same agent with a copy of the path up to a message; to another
  agent, a new session whose first message is a handoff carrying the transcript.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value

from ..attachments import service as attachments
from ..extensions import db
from ..fleet import registry
from ..models import ConversationSession, Message, new_id, utcnow
from ..runs import run_manager
from . import tree
from .context import conversation_for_agent
from .service import (
    NOT_COUNTED,
    ChatError,
    _message_columns,
    check_fits,
    insert_run,
    make_title,
    preparing_run,
    resolve_agent,
    resolve_model,
    validate_content,
)

CONTINUE_INSTRUCTION = "Continue your previous reply exactly where it stopped. Do not repeat what you already wrote."
RETRYABLE = ("error", "interrupted", "cancelled")
CONTINUABLE = ("interrupted", "cancelled")
BUSY = "A reply is still being written in this session. Stop it or wait for it to finish."
HANDOFF = "handoff"

sessions_table = ConversationSession.__table__
messages_table = Message.__table__


@dataclass(frozen=True)
class Started:
    session_id: str
    reply_id: str
    user_message_id: str | None


def session_message(session: ConversationSession, message_id: str) -> Message:
    """A message of this session, or 404 (another session's message is as unknown as none)."""
    message = db.session.get(Message, message_id) if isinstance(message_id, str) and len(message_id) <= 36 else None
    if message is None or message.session_id != session.id:
        raise ChatError(404, "There is no such message in this session.")
    return message


def _writable(session: ConversationSession):
    if session.is_archived:
        raise ChatError(409, "This session is archived. Unarchive it to continue.")
    agent = registry().get(session.agent_id)
    if agent is None:
        raise ChatError(
            409, f"Agent {session.agent_id} is no longer in the registry; branch into a chat with another agent."
        )
    return agent


def regenerate(session: ConversationSession, message_id: str, model_id=None) -> Started:
    reply = session_message(session, message_id)
    if reply.role != "assistant":
        raise ChatError(422, "Only a reply can be regenerated; edit your own message instead.")
    if reply.is_live:
        raise ChatError(409, BUSY)
    return _start(session, parent=_question_of(session, reply), model_id=model_id or _usual_model(session, reply))


def retry(session: ConversationSession, message_id: str) -> Started:
    reply = session_message(session, message_id)
    if reply.role != "assistant" or reply.status not in RETRYABLE:
        raise ChatError(422, "Only a reply that failed, was interrupted or was stopped can be retried.")
    return _start(session, parent=_question_of(session, reply), model_id=_usual_model(session, reply))


def continue_reply(session: ConversationSession, message_id: str) -> Started:
    reply = session_message(session, message_id)
    if reply.role != "assistant" or reply.status not in CONTINUABLE or not reply.content:
        raise ChatError(422, "Only an interrupted or stopped reply with some text can be continued.")
    return _start(session, parent=reply, model_id=_usual_model(session, reply))


def edit(session: ConversationSession, message_id: str, content, model_id=None) -> Started:
    original = session_message(session, message_id)
    if original.role != "user" or original.message_type != "chat":
        raise ChatError(422, "Only your own messages can be edited.")
    files = attachments.by_message([original.id]).get(original.id, [])  # the new version keeps its files
    content = validate_content(content, with_files=bool(files))
    parent = _parent_of(session, original)
    return _start(session, parent=parent, model_id=model_id or session.model_id, user_content=content, files=files)


def switch(session: ConversationSession, message_id: str) -> list[str]:
    """Show the branch through `message_id` (its newest leaf); the new path's ids."""
    session_message(session, message_id)
    if session.active_run_id is not None:
        raise ChatError(409, BUSY)
    tree.adopt(session)
    shape = tree.load(session)
    leaf = shape.newest_leaf_under(message_id)
    moved = db.session.execute(
        update(sessions_table)
        .where(sessions_table.c.id == session.id, sessions_table.c.active_run_id.is_(None))
        .values(current_leaf_id=leaf)
    ).rowcount
    if not moved:
        db.session.rollback()
        raise ChatError(409, BUSY)
    set_committed_value(session, "current_leaf_id", leaf)
    db.session.commit()
    return shape.path(leaf)


def _usual_model(session: ConversationSession, reply: Message) -> str | None:
    """The model that wrote the reply, if the agent still serves it; else the session's."""
    agent = registry().get(session.agent_id)
    stored = reply.model_id
    return stored if agent is not None and stored and agent.model(stored) else session.model_id


def _question_of(session: ConversationSession, reply: Message) -> Message:
    parent = _parent_of(session, reply)
    if parent is None:
        raise ChatError(422, "This reply answers no message; edit a message instead.")
    return parent


def _parent_of(session: ConversationSession, message: Message) -> Message | None:
    if message.parent_id is None and session.current_leaf_id is None:
        # A session written without parents: the message before it on the only path.
        ids = tree.path_ids(session)
        index = ids.index(message.id)
        return db.session.get(Message, ids[index - 1]) if index else None
    return db.session.get(Message, message.parent_id) if message.parent_id else None


def _start(session, *, parent: Message | None, model_id, user_content: str | None = None, files=()) -> Started:
    """Claim the session, save (the user's message and) a pending reply under `parent`, launch."""
    agent = _writable(session)
    model = resolve_model(agent, model_id)
    if parent is not None and parent.is_live:
        raise ChatError(409, BUSY)
    counts = check_fits(model, user_content, files) if user_content is not None else NOT_COUNTED
    reply_id = new_id()
    with preparing_run(session, agent, model, reply_id) as (live, now):
        tree.adopt(session)
        base = {"session_id": session.id, "agent_id": agent.agent_id, "usage_json": None, "error": None}
        rows, user_id, anchor = [], None, parent.id if parent is not None else None
        if user_content is not None:
            user_id = new_id()
            rows.append(
                {
                    **base,
                    "id": user_id,
                    "parent_id": anchor,
                    "role": "user",
                    "message_type": "chat",
                    "content": user_content,
                    "status": "complete",
                    "created_at": now,
                    "completed_at": now,
                    "model_id": None,
                    **counts,
                }
            )
            anchor = user_id
        rows.append(
            {
                **base,
                "id": reply_id,
                "parent_id": anchor,
                "role": "assistant",
                "message_type": "chat",
                "content": "",
                "status": "pending",
                "created_at": now + timedelta(microseconds=1),
                "completed_at": None,
                "model_id": model.model_id,
                **NOT_COUNTED,
            }
        )
        db.session.execute(messages_table.insert(), [_message_columns(row) for row in rows])
        if user_id is not None:
            attachments.link(user_id, list(files))
        insert_run(reply_id, session.id, agent, model, now)
        tree.set_leaf(session, reply_id)
        db.session.commit()
        history = _history(session.id, parent, user_id, user_content, model)
    run_manager().launch(live, history)
    return Started(session.id, reply_id, user_id)


def _history(session_id: str, parent: Message | None, user_id, user_content, model) -> list[dict]:
    """Exactly the new path: up to the new (or the answered) user message, or the partial reply
    followed by the instruction to continue it."""
    if user_id is not None:
        return conversation_for_agent(session_id, {"id": user_id, "content": user_content}, model)
    if parent is not None and parent.role == "assistant":
        return conversation_for_agent(session_id, {"id": "", "content": CONTINUE_INSTRUCTION}, model)
    return conversation_for_agent(session_id, {"id": parent.id, "content": parent.content}, model)


# ---- branching into a new session -------------------------------------------------------------------


def branch(session: ConversationSession, message_id: str, user, agent_id=None, model_id=None) -> ConversationSession:
    """A new session with the path up to `message_id`: copied for the same agent, handed off
    (one handoff message carrying the transcript) for another."""
    last = session_message(session, message_id)
    if last.is_live:
        raise ChatError(409, "This reply is still being written; branch from it once it has ended.")
    ids = tree.path_ids(session)
    if last.id not in ids:
        ids = tree.load(session).path(last.id)
    path = tree.messages_of(ids[: ids.index(last.id) + 1])
    same_agent = not agent_id or agent_id == session.agent_id
    if same_agent:
        agent = registry().get(session.agent_id)
        model = session.model_id if agent is None else resolve_model(agent, model_id or session.model_id).model_id
        agent_name, parent_role = session.agent_name, session.parent_role
        agent_key = session.agent_id
    else:
        agent = resolve_agent(agent_id)
        model = resolve_model(agent, model_id).model_id
        agent_name, parent_role, agent_key = agent.name, agent.parent_role, agent.agent_id
    now = utcnow()
    title_prefix = "Branch of " if same_agent else "Handoff: "
    new = ConversationSession(
        id=new_id(),
        user_id=user.id,
        agent_id=agent_key,
        agent_name=agent_name,
        parent_role=parent_role,
        model_id=model,
        title=make_title(title_prefix + session.title),
        created_at=now,
        updated_at=now,
    )
    db.session.add(new)
    db.session.flush()
    if same_agent:
        rows, previous, copied = [], None, {}
        for message in path:
            row = {
                "id": new_id(),
                "session_id": new.id,
                "parent_id": previous,
                "role": message.role,
                "message_type": message.message_type,
                "agent_id": message.agent_id,
                "content": message.content or "",
                "status": message.status,
                "usage_json": message.usage_json,
                "error": message.error,
                "created_at": message.created_at,
                "completed_at": message.completed_at,
                # The copy keeps who wrote what, but its cost stays with the original (not summed twice).
                "model_id": message.model_id,
                **NOT_COUNTED,
            }
            rows.append(_message_columns(row))
            copied[message.id] = row["id"]
            previous = row["id"]
        if rows:
            db.session.execute(messages_table.insert(), rows)
            for original, files in attachments.by_message(copied).items():
                attachments.link(copied[original], files)
        leaf = previous
    else:
        leaf = new_id()
        db.session.execute(
            messages_table.insert(),
            [
                _message_columns(
                    {
                        "id": leaf,
                        "session_id": new.id,
                        "parent_id": None,
                        "role": "user",
                        "message_type": HANDOFF,
                        "agent_id": session.agent_id,
                        "content": handoff_text(session, path),
                        "status": "complete",
                        "usage_json": None,
                        "error": None,
                        "created_at": now,
                        "completed_at": now,
                        "model_id": None,
                        **NOT_COUNTED,
                    }
                )
            ],
        )
    new.current_leaf_id = leaf
    db.session.commit()
    return new


def handoff_text(session: ConversationSession, path: list[Message]) -> str:
    """The transcript another agent is given, newest kept when it is longer than a message may be."""
    head = (
        f"Handoff: this conversation was started with {session.agent_name} ({session.agent_id}). "
        "The transcript so far follows; continue from it.\n\n"
    )
    parts = []
    for message in path:
        if message.role not in ("user", "assistant") or not message.content:
            continue
        who = "User" if message.role == "user" else session.agent_name
        parts.append(f"**{who}:**\n\n{message.content}\n\n")
    limit = current_app.config["MAX_MESSAGE_CHARS"] - len(head)
    body = "".join(parts)
    if len(body) > limit:
        body = "…" + body[-(limit - 1) :]
    return head + body.rstrip()


def path_summary(session: ConversationSession) -> dict:
    """The JSON API's view of the tree: the current path with each message's place among its siblings."""
    shape = tree.load(session)
    ids = shape.path()
    messages = tree.messages_of(ids)
    items = []
    for message in messages:
        place = shape.siblings(message.id)
        items.append(
            {
                "id": message.id,
                "parent_id": message.parent_id,
                "role": message.role,
                "message_type": message.message_type,
                "status": message.status,
                "model_id": message.model_id,
                "content": message.content,
                "sibling_ids": list(place.ids),
                "position": place.position,
                "count": place.count,
            }
        )
    return {"session_id": session.id, "current_leaf_id": shape.leaf_id, "messages": items}
