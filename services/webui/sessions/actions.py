"""What people and commands do to sessions: rename, archive, unarchive, delete, and retention.

Shared by the JSON API, the pages and the CLI, so all three enforce exactly the same rules.
Deleting a session deletes its messages, runs and run events through the foreign keys' ON DELETE
CASCADE, and its search entries through the triggers (SQLite) or the indexes (PostgreSQL).
Attachments no remaining message carries go with it, their files after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from ..attachments import service as attachments
from ..extensions import db
from ..models import ConversationSession, Message, utcnow
from .queries import SessionsError

S = ConversationSession
TITLE_MAX = 200
BUSY = "A reply is still being written in this session. Stop it or wait for it to finish."


def clean_title(title) -> str:
    if not isinstance(title, str):
        raise SessionsError(422, "title must be text.")
    title = " ".join(title.split())
    if not title:
        raise SessionsError(422, "A title cannot be empty.")
    if len(title) > TITLE_MAX:
        raise SessionsError(422, f"A title has at most {TITLE_MAX} characters; this one has {len(title)}.")
    return title


def rename(session: S, title) -> S:
    session.title = clean_title(title)
    db.session.commit()
    return session


def archive(session: S) -> S:
    if session.archived_at is None:
        if session.active_run_id is not None:
            raise SessionsError(409, BUSY)
        session.archived_at = utcnow()
        db.session.commit()
    return session


def unarchive(session: S) -> S:
    if session.archived_at is not None:
        session.archived_at = None
        db.session.commit()
    return session


def delete_session(session: S) -> None:
    if session.active_run_id is not None:
        raise SessionsError(409, BUSY)
    carried = attachments.used_by_sessions([session.id])
    db.session.execute(delete(S).where(S.id == session.id))
    hashes = attachments.drop_unused(carried)
    db.session.commit()
    db.session.expunge_all()
    attachments.remove_blobs(hashes)


# ---- retention ----------------------------------------------------------------------------------


@dataclass
class RetentionReport:
    sessions: int
    messages: int
    cutoff: object


def purge_archived(days: int, *, dry_run: bool = False, batch: int = 500) -> RetentionReport:
    """Delete sessions archived more than `days` days ago (active sessions are never touched)."""
    cutoff = utcnow() - timedelta(days=days)
    eligible = S.archived_at.is_not(None) & (S.archived_at < cutoff) & S.active_run_id.is_(None)
    if dry_run:
        sessions = db.session.scalar(select(func.count()).select_from(S).where(eligible)) or 0
        messages = (
            db.session.scalar(
                select(func.count()).select_from(Message).where(Message.session_id.in_(select(S.id).where(eligible)))
            )
            or 0
        )
        return RetentionReport(sessions=sessions, messages=messages, cutoff=cutoff)
    sessions = messages = 0
    while True:  # in batches, so that a large purge never holds the write lock for long
        ids = db.session.scalars(select(S.id).where(eligible).limit(batch)).all()
        if not ids:
            break
        messages += db.session.scalar(select(func.count()).select_from(Message).where(Message.session_id.in_(ids))) or 0
        carried = attachments.used_by_sessions(ids)
        sessions += db.session.execute(delete(S).where(S.id.in_(ids))).rowcount
        hashes = attachments.drop_unused(carried)
        db.session.commit()
        attachments.remove_blobs(hashes)
    return RetentionReport(sessions=sessions, messages=messages, cutoff=cutoff)


def archive_idle(days: int, *, dry_run: bool = False) -> RetentionReport:
    """Archive active sessions with no activity for `days` days (ARCHIVE_IDLE_DAYS)."""
    cutoff = utcnow() - timedelta(days=days)
    idle = S.archived_at.is_(None) & (S.updated_at < cutoff) & S.active_run_id.is_(None)
    if dry_run:
        sessions = db.session.scalar(select(func.count()).select_from(S).where(idle)) or 0
    else:
        sessions = db.session.execute(
            update(S).where(idle).values(archived_at=utcnow()).execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
    return RetentionReport(sessions=sessions, messages=0, cutoff=cutoff)
