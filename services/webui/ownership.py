"""Who may see what: every session-scoped route goes through here, and a miss is always 404.

404, never 403, so that a foreign session id is indistinguishable from one that does not exist.
"""

from __future__ import annotations

from flask import abort
from flask_login import current_user

from .extensions import db
from .models import ConversationSession

NOT_FOUND = "There is no such session."


def owned_session(session_id: str, *, admin_may_read: bool = False) -> ConversationSession:
    """The current user's session, or 404. Admins may read (never write) anyone's with the flag."""
    session = db.session.get(ConversationSession, session_id) if len(session_id) <= 36 else None
    if session is None:
        abort(404, NOT_FOUND)
    if session.user_id == current_user.id:
        return session
    if admin_may_read and current_user.is_admin:
        return session
    abort(404, NOT_FOUND)
