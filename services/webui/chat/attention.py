"""Attention: which of a person's chats are running, waiting for approval, or ended unseen.

A chat's mark comes from its latest reply: live → "running" (or "waiting" while it awaits
approval); ended after the owner last looked (`conversation_sessions.seen_at`) → "unseen". Only
the sidebar's recent sessions are considered, in one query that walks the user's
(user_id, updated_at) index and seeks each session's latest reply in
ix_messages_session_role_created: cheap however many sessions a user has.

The page keeps the marks current by asking GET /api/chat/attention every few seconds
(static/js/attention.js), fetches GET /chat/sidebar again when a marked chat is not listed yet,
and says when the owner has looked with POST .../seen; a GET never writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, current_app, jsonify, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from ..extensions import db
from ..models import LIVE_STATUSES, ConversationSession, Message, utcnow
from ..ownership import owned_session
from .display import RECENT_SESSIONS

bp = Blueprint("attention", __name__)

# Order matters only for documentation: the states a chat can be marked with, and their words.
MARK_LABELS = {
    "running": "Running",
    "waiting": "Needs approval",
    "unseen": "New reply",
}
WAITING_STATUS = "awaiting_approval"


@dataclass(frozen=True)
class Mark:
    session_id: str
    title: str
    state: str  # a key of MARK_LABELS
    reply_id: str

    @property
    def label(self) -> str:
        return MARK_LABELS[self.state]

    @property
    def needs_attention(self) -> bool:
        """What the tab title counts: a chat waiting for the person, or a reply they have not seen."""
        return self.state in ("waiting", "unseen")


def mark_state(status: str | None, completed_at, seen_at) -> str | None:
    if status is None:
        return None
    if status == WAITING_STATUS:
        return "waiting"
    if status in LIVE_STATUSES:
        return "running"
    # NULL seen_at: a session from before this was kept, counted as seen.
    if completed_at is not None and seen_at is not None and completed_at > seen_at:
        return "unseen"
    return None


def _marks_select():
    session = ConversationSession
    latest_reply = (
        select(Message.id)
        .where(Message.session_id == session.id, Message.role == "assistant")
        .order_by(Message.created_at.desc())
        .limit(1)
        .correlate(session)
        .scalar_subquery()
    )
    return select(
        session.id, session.title, session.seen_at, Message.id, Message.status, Message.completed_at
    ).outerjoin(Message, Message.id == latest_reply)


def _marks(rows) -> dict[str, Mark]:
    marks = {}
    for session_id, title, seen_at, reply_id, status, completed_at in rows:
        state = mark_state(status, completed_at, seen_at)
        if state is not None:
            marks[session_id] = Mark(session_id, title, state, reply_id)
    return marks


def recent_marks(user_id: int) -> dict[str, Mark]:
    """The marks of the user's recent sessions (the sidebar's), in one query."""
    session = ConversationSession
    rows = db.session.execute(
        _marks_select()
        .where(session.user_id == user_id, session.archived_at.is_(None))
        .order_by(session.updated_at.desc())
        .limit(RECENT_SESSIONS)
    ).all()
    return _marks(rows)


def marks_for(sessions) -> dict[str, Mark]:
    """The marks of sessions the page already loaded (the sidebar on page render)."""
    ids = [s.id for s in sessions]
    if not ids:
        return {}
    return _marks(db.session.execute(_marks_select().where(ConversationSession.id.in_(ids))).all())


@bp.app_context_processor
def attention_helpers():
    return {
        "attention_marks": marks_for,
        "attention_poll_seconds": lambda: current_app.config["ATTENTION_POLL_SECONDS"],
    }


@bp.get("/api/chat/attention")
def attention():
    """The caller's marked chats among the recent ones, and the counts the tab title shows."""
    marks = list(recent_marks(current_user.id).values())
    return jsonify(
        sessions=[
            {
                "id": m.session_id,
                "title": m.title,
                "state": m.state,
                "label": m.label,
                "reply_id": m.reply_id,
                "url": url_for("chat.session_page", session_id=m.session_id),
            }
            for m in marks
        ],
        running=sum(m.state == "running" for m in marks),
        waiting=sum(m.state == "waiting" for m in marks),
        unseen=sum(m.state == "unseen" for m in marks),
        attention=sum(m.needs_attention for m in marks),
        poll_seconds=current_app.config["ATTENTION_POLL_SECONDS"],
    )


@bp.post("/api/chat/sessions/<session_id>/seen")
def seen(session_id: str):
    """The owner has looked at the session (its page is visible): its ended replies are seen.

    Owner only (an admin reading someone's session never marks it seen for them).
    """
    session = owned_session(session_id)
    session.seen_at = utcnow()
    db.session.commit()
    return jsonify(id=session.id, seen_at=session.seen_at.isoformat() + "Z")


@bp.get("/chat/sidebar")
def sidebar():
    """The sidebar alone: the page asks for it when a marked chat is not in its list yet (a chat
    started in another tab or through the API). ?current= is the session the page shows."""
    current = request.args.get("current")
    return render_template("partials/session_list.html", current_session_id=current)
