"""The data model: users, conversation sessions, messages, and the runs that produce replies.

Portable by construction: UUIDs are made in Python and stored as text, JSON is stored as TEXT,
times are naive UTC. The same models and migrations run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import Index

from .extensions import db

USER_ROLES = ("admin", "user")
MESSAGE_ROLES = ("user", "assistant", "system")
# "summary": a reply that stands in for every message before it (chat/context.py);
# "context_reset": a divider (role system) before which nothing is sent to the agent.
MESSAGE_TYPES = ("chat", "summary", "context_reset", "handoff")
# A reply is "live" while a run may still change it.
LIVE_STATUSES = ("pending", "streaming", "planning", "executing", "awaiting_approval")
FINAL_STATUSES = ("complete", "cancelled", "error", "interrupted")
MESSAGE_STATUSES = LIVE_STATUSES + FINAL_STATUSES


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(64), nullable=False, unique=True)
    password_hash = db.Column(db.String(255), nullable=False)
    role = db.Column(db.String(16), nullable=False, default="user")
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class LoginSession(db.Model):
    """One login, so that it can end: the cookie holds a random token, this row its hash.

    Deleting the row ends that login for every copy of its cookie (logout); deleting all of a
    user's rows ends all of them (a password change, `flask users logout-all`).
    """

    __tablename__ = "login_sessions"

    # SHA-256 of the token, hex: a copy of this table gives no working cookie.
    id = db.Column(db.String(64), primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    expires_at = db.Column(db.DateTime, nullable=False)

    __table_args__ = (Index("ix_login_sessions_user_id", "user_id"),)


class ConversationSession(db.Model):
    __tablename__ = "conversation_sessions"

    id = db.Column(db.String(36), primary_key=True, default=new_id)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    agent_id = db.Column(db.String(64), nullable=False)
    agent_name = db.Column(db.String(128), nullable=False)
    parent_role = db.Column(db.String(64), nullable=False, default="")
    model_id = db.Column(db.String(128), nullable=False)
    title = db.Column(db.String(200), nullable=False, default="New chat")
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    updated_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    archived_at = db.Column(db.DateTime, nullable=True)
    # Set while a run is live; claimed with a conditional UPDATE so that two workers cannot
    # start two runs in one session.
    active_run_id = db.Column(db.String(36), nullable=True)
    # When the owner last looked at the session (its page visible); a reply that ended later is
    # "unseen" (chat/attention.py). NULL (sessions from before it was kept) counts as seen.
    seen_at = db.Column(db.DateTime, nullable=True, default=utcnow)
    # The last message of the path the page shows and the agent is sent (chat/tree.py). No
    # foreign key: the session row is written before its first message.
    current_leaf_id = db.Column(db.String(36), nullable=True)

    user = db.relationship("User")
    messages = db.relationship(
        "Message",
        back_populates="session",
        order_by="Message.created_at",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    # Keyset pagination needs the tie-breaker `id` in the index, for one user (sidebar, sessions
    # page) and for everyone (admin listing, retention); the trailing agent, model and archived
    # columns let a filtered walk test rows inside the index without reading the table.
    __table_args__ = (
        Index("ix_sessions_user_updated_id", "user_id", "updated_at", "id", "agent_id", "model_id", "archived_at"),
        Index("ix_sessions_user_created_id", "user_id", "created_at", "id", "agent_id", "model_id", "archived_at"),
        Index("ix_sessions_updated_id", "updated_at", "id", "agent_id", "model_id", "archived_at"),
        Index("ix_sessions_created_id", "created_at", "id", "agent_id", "model_id", "archived_at"),
        Index("ix_sessions_archived_at", "archived_at"),
    )

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


# Far above any real reply (a trillion tokens, a billion dollars) and far below where arithmetic on
# them overflows a float: an import beyond them is refused, a stored value beyond them is ignored.
USAGE_MAX_TOKENS = 10**12
USAGE_MAX_COST_USD = 10**9
USAGE_NUMBERS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")


def sane_usage(usage) -> dict | None:
    """Usage as reported (a dict or its JSON text), without the numbers nothing can add up or
    format: huge, negative, NaN or infinite ones, and counts or costs that are not numbers at all,
    are dropped; everything else is kept as it is.

    Rows written before the import had bounds, or by an agent that reports nonsense, still render.
    """
    if isinstance(usage, str):
        try:
            usage = json.loads(usage)
        except ValueError:
            return None
    if not isinstance(usage, dict):
        return None
    kept = {}
    for key, value in usage.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number:
            limit = USAGE_MAX_COST_USD if key == "cost_usd" else USAGE_MAX_TOKENS
            if (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value <= limit:
                continue
        elif key in USAGE_NUMBERS:
            continue  # "lots" of tokens: what is shown and summed must be a number
        kept[key] = value
    return kept


def usage_columns(usage) -> dict:
    """The numbers of a reply's usage as the columns the usage overview sums: (0, 0, None) when
    nothing usable was reported. Whoever writes `messages.usage` writes these alongside."""
    usage = sane_usage(usage) or {}

    def whole(key):
        value = usage.get(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    cost = usage.get("cost_usd")
    return {
        "prompt_tokens": whole("prompt_tokens"),
        "completion_tokens": whole("completion_tokens"),
        "cost_usd": float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
    }


class Message(db.Model):
    __tablename__ = "messages"

    id = db.Column(db.String(36), primary_key=True, default=new_id)
    session_id = db.Column(db.String(36), db.ForeignKey("conversation_sessions.id", ondelete="CASCADE"), nullable=False)
    # The previous message on this message's path (None for a first message): a session's
    # messages form a tree, edits and regenerations adding siblings (chat/tree.py).
    parent_id = db.Column(db.String(36), db.ForeignKey("messages.id"), nullable=True)
    role = db.Column(db.String(16), nullable=False)
    message_type = db.Column(db.String(32), nullable=False, default="chat")
    agent_id = db.Column(db.String(64), nullable=True)
    content = db.Column(db.Text, nullable=False, default="")
    status = db.Column(db.String(24), nullable=False, default="complete")
    usage_json = db.Column("usage", db.Text, nullable=True)
    # The reply's timeline: its status updates [{status, detail, at}] as JSON, kept with the
    # message (the run's event log is deleted after a while).
    steps_json = db.Column("steps", db.Text, nullable=True)
    error = db.Column(db.Text, nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    completed_at = db.Column(db.DateTime, nullable=True)
    # Tokens of the content as `token_counter` ("cl100k_base", "estimate") counts them: filled
    # once, so that planning a long session's context does not re-tokenize it on every view.
    token_count = db.Column(db.Integer, nullable=True)
    token_counter = db.Column(db.String(32), nullable=True)
    # The model that wrote this reply (it can change within a session); None for a person's turn.
    model_id = db.Column(db.String(128), nullable=True)
    # The usage's numbers as columns (usage_columns), so that totals are a SQL SUM, not JSON
    # parsed row by row.
    prompt_tokens = db.Column(db.BigInteger, nullable=False, default=0, server_default="0")
    completion_tokens = db.Column(db.BigInteger, nullable=False, default=0, server_default="0")
    cost_usd = db.Column(db.Float, nullable=True)

    session = db.relationship("ConversationSession", back_populates="messages")

    __table_args__ = (
        Index("ix_messages_session_created", "session_id", "created_at"),
        # "status of the latest reply" in one covering seek
        Index("ix_messages_session_role_created", "session_id", "role", "created_at", "status"),
        # Usage totals (a session's running total, the usage overview) read from the index alone.
        Index(
            "ix_messages_usage",
            "session_id",
            "role",
            "created_at",
            "agent_id",
            "model_id",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
        ),
        Index("ix_messages_parent_id", "parent_id"),
    )

    @property
    def usage(self) -> dict | None:
        return sane_usage(self.usage_json)

    @usage.setter
    def usage(self, value: dict | None) -> None:
        self.usage_json = json.dumps(value, sort_keys=True) if value is not None else None
        for name, number in usage_columns(value).items():
            setattr(self, name, number)

    @property
    def steps(self) -> list[dict]:
        from .runs.events import load_steps

        return load_steps(self.steps_json)

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES


class Run(db.Model):
    """One agent task producing one assistant message; shared state between gunicorn workers."""

    __tablename__ = "runs"

    message_id = db.Column(db.String(36), db.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    session_id = db.Column(db.String(36), db.ForeignKey("conversation_sessions.id", ondelete="CASCADE"), nullable=False)
    agent_id = db.Column(db.String(64), nullable=False)
    model_id = db.Column(db.String(128), nullable=False)
    # "hostname:pid" of the process reading the agent's stream.
    owner = db.Column(db.String(128), nullable=True)
    beat_at = db.Column(db.DateTime, nullable=True)
    cancel_requested_at = db.Column(db.DateTime, nullable=True)
    # No event above this number can have been sent to a client (the driver stores it ahead of
    # what it publishes), so recovery numbers its closing events above it.
    last_seq = db.Column(db.Integer, nullable=False, default=0)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    ended_at = db.Column(db.DateTime, nullable=True)

    __table_args__ = (
        Index("ix_runs_session_created", "session_id", "created_at"),
        Index("ix_runs_owner_ended", "owner", "ended_at"),
        Index("ix_runs_ended", "ended_at"),
    )


class Approval(db.Model):
    """A request an agent made while its reply waits (status awaiting_approval), and the answer.

    Its own table, not columns of the message: the driver's periodic flushes of a reply can then
    never overwrite a decision another worker wrote. `decider` keeps the name of who answered,
    so that the record stays readable after the account is gone (and survives export/import).
    """

    __tablename__ = "approvals"

    message_id = db.Column(db.String(36), db.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    approval_id = db.Column(db.String(128), primary_key=True)
    title = db.Column(db.String(300), nullable=False)
    detail = db.Column(db.Text, nullable=False, default="")
    requested_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    decision = db.Column(db.String(16), nullable=True)  # "approve" | "reject"; NULL while open
    comment = db.Column(db.Text, nullable=True)
    decided_by = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    decider = db.Column(db.String(64), nullable=True)
    decided_at = db.Column(db.DateTime, nullable=True)


class IdempotencyKey(db.Model):
    """The first answer to a send, so that a retried POST answers with it instead of a second message."""

    __tablename__ = "idempotency_keys"

    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key = db.Column(db.String(128), primary_key=True)
    session_id = db.Column(db.String(36), db.ForeignKey("conversation_sessions.id", ondelete="CASCADE"), nullable=False)
    user_message_id = db.Column(db.String(36), nullable=False)
    reply_id = db.Column(db.String(36), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)


class Attachment(db.Model):
    """A file a user uploaded: metadata here, the bytes on disk by SHA-256 (attachments/storage.py).

    Rows are per user and upload; the blob is shared by every row with the same hash (dedupe).
    """

    __tablename__ = "attachments"

    id = db.Column(db.String(36), primary_key=True, default=new_id)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    sha256 = db.Column(db.String(64), nullable=False)
    filename = db.Column(db.String(255), nullable=False)
    # Decided by the server from the content (and the extension for text), never by the client.
    media_type = db.Column(db.String(100), nullable=False)
    kind = db.Column(db.String(16), nullable=False)  # text, pdf or image
    size = db.Column(db.Integer, nullable=False)
    text_chars = db.Column(db.Integer, nullable=False, default=0)
    # A PDF's extracted text; a text file's text is the blob itself.
    extracted_text = db.Column(db.Text, nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)

    __table_args__ = (
        Index("ix_attachments_user_sha256", "user_id", "sha256"),
        Index("ix_attachments_sha256", "sha256"),
        Index("ix_attachments_created_at", "created_at"),
    )


class MessageAttachment(db.Model):
    """Which attachments a (user) message carries, in order."""

    __tablename__ = "message_attachments"

    message_id = db.Column(db.String(36), db.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    position = db.Column(db.Integer, primary_key=True)
    attachment_id = db.Column(db.String(36), db.ForeignKey("attachments.id", ondelete="CASCADE"), nullable=False)

    __table_args__ = (Index("ix_message_attachments_attachment_id", "attachment_id"),)
