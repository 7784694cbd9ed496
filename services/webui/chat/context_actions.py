"""Acting on what the agent receives: summarize earlier messages, start a fresh context, edit or
remove a summary or a fresh-context marker.

A summary is a normal run of the session's agent (it claims the session's lock like a send, so
it streams, can be stopped, and 409s while another reply is live); its reply is stored as a
message of type "summary", which the plan (context.py) sends in place of everything before it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, update

from ..extensions import db
from ..fleet import registry
from ..models import ConversationSession, Message, new_id, utcnow
from ..runs import run_manager
from . import tree
from .context import SUMMARY_INSTRUCTION, plan_context, store_counts
from .service import NOT_COUNTED, ChatError, _message_columns, insert_run, preparing_run, take_leaf

log = logging.getLogger("switchboard.context")
messages_table = Message.__table__
REMOVABLE_TYPES = ("summary", "context_reset")


def _writable(session: ConversationSession) -> None:
    if session.is_archived:
        raise ChatError(409, "This session is archived. Unarchive it to continue.")
    db.session.refresh(session, ["active_run_id"])
    if session.active_run_id is not None:
        raise ChatError(409, "A reply is still being written in this session. Stop it or wait for it to finish.")


def _agent_and_model(session: ConversationSession):
    agent = registry().get(session.agent_id)
    if agent is None:
        raise ChatError(409, f"Agent {session.agent_id} is no longer in the registry, so this chat cannot continue.")
    return agent, agent.model(session.model_id) or agent.models[0]


def start_summary(session: ConversationSession) -> str:
    """Start a run that writes a summary of what the agent sees now; the summary's message id."""
    _writable(session)
    agent, model = _agent_and_model(session)
    plan = plan_context(session.id, model, new_text=SUMMARY_INSTRUCTION)
    if not any(item.sent and item.message_type == "chat" for item in plan.items):
        raise ChatError(409, "There is nothing new to summarize: the agent sees no messages since the last summary.")
    summary_id = new_id()
    with preparing_run(session, agent, model, summary_id) as (live, now):
        parent_id = take_leaf(session, summary_id)
        row = {
            "id": summary_id,
            "session_id": session.id,
            "role": "assistant",
            "message_type": "summary",
            "agent_id": agent.agent_id,
            "content": "",
            "status": "pending",
            "usage_json": None,
            "error": None,
            "created_at": now + timedelta(microseconds=1),
            "completed_at": None,
            "model_id": model.model_id,
            "parent_id": parent_id,
        }
        db.session.execute(messages_table.insert(), _message_columns(row) | NOT_COUNTED)
        insert_run(summary_id, session.id, agent, model, now)
        db.session.commit()
    run_manager().launch(live, plan.agent_messages() + [{"role": "user", "content": SUMMARY_INSTRUCTION}])
    store_counts(plan)
    return summary_id


def reset_context(session: ConversationSession) -> str:
    """Store a fresh-context marker: nothing before it is sent to the agent."""
    _writable(session)
    now = utcnow()
    marker_id = new_id()
    parent_id = take_leaf(session, marker_id)
    row = {
        "id": marker_id,
        "parent_id": parent_id,
        "session_id": session.id,
        "role": "system",
        "message_type": "context_reset",
        "agent_id": None,
        "content": "",
        "status": "complete",
        "usage_json": None,
        "error": None,
        "created_at": now,
        "completed_at": now,
    }
    db.session.execute(messages_table.insert(), _message_columns(row) | NOT_COUNTED)
    db.session.execute(
        update(ConversationSession.__table__)
        .where(ConversationSession.__table__.c.id == session.id)
        .values(updated_at=now)
    )
    db.session.commit()
    return row["id"]


def _context_message(session: ConversationSession, message_id: str, types: tuple[str, ...]) -> Message:
    message = db.session.get(Message, message_id) if isinstance(message_id, str) else None
    if message is None or message.session_id != session.id:
        raise ChatError(404, "There is no such message in this session.")
    if message.message_type not in types:
        names = " and ".join({"summary": "summaries", "context_reset": "fresh-context markers"}[t] for t in types)
        raise ChatError(422, f"Only {names} can be changed this way; chat messages stay as they were.")
    return message


def edit_summary(session: ConversationSession, message_id: str, content) -> Message:
    _writable(session)
    message = _context_message(session, message_id, ("summary",))
    if not isinstance(content, str) or not content.strip():
        raise ChatError(422, "A summary cannot be empty; remove it instead.")
    limit = current_app.config["MAX_REPLY_CHARS"]
    if len(content) > limit:
        raise ChatError(422, f"The summary is {len(content):,} characters long; the limit is {limit:,}.")
    db.session.execute(
        update(messages_table)
        .where(messages_table.c.id == message.id)
        .values(content=content, status="complete", error=None, token_count=None, token_counter=None)
    )
    db.session.commit()
    db.session.refresh(message)
    return message


def remove_context_message(session: ConversationSession, message_id: str) -> None:
    """Undo a fresh-context marker or drop a summary: the messages before it are sent again."""
    _writable(session)
    message = _context_message(session, message_id, REMOVABLE_TYPES)
    # Keep the path whole (chat/tree.py): what followed it now follows what came before it.
    db.session.execute(
        update(messages_table).where(messages_table.c.parent_id == message.id).values(parent_id=message.parent_id)
    )
    if session.current_leaf_id == message.id:
        tree.set_leaf(session, message.parent_id)
    db.session.execute(delete(messages_table).where(messages_table.c.id == message.id))
    db.session.commit()


def init_auto_summary(app) -> None:
    """With CONTEXT_AUTO_SUMMARY set, every run that ends here may start a summary."""
    from ..runs import run_manager as manager_of

    manager_of(app).on_end.append(lambda run: auto_summarize_after(app, run))


def auto_summarize_after(app, run) -> str | None:
    """After a complete chat reply: summarize when what is sent uses CONTEXT_AUTO_SUMMARY of the
    budget or more, or no longer fits. The summary's id, or None when none was started."""
    share = app.config.get("CONTEXT_AUTO_SUMMARY") or 0.0
    if share <= 0 or not run.session_id:
        return None
    with app.app_context():
        try:
            message = db.session.get(Message, run.run_id)
            if message is None or message.message_type != "chat" or message.status != "complete":
                return None  # never after a summary (no loop), nor after a failed reply
            session = db.session.get(ConversationSession, run.session_id)
            if session is None or session.is_archived or session.active_run_id is not None:
                return None
            _, model = _agent_and_model(session)
            plan = plan_context(session.id, model)
            if plan.cut_reason != "budget" and plan.used < share * plan.budget:
                return None
            log.info("session %s uses %d of %d tokens: summarizing", session.id, plan.used, plan.budget)
            return start_summary(session)
        except ChatError as refused:  # another run claimed the session, nothing to summarize, …
            log.info("no automatic summary for session %s: %s", run.session_id, refused.message)
            return None
        finally:
            db.session.remove()
