"""Cost: the model that wrote each reply, and each reply's usage as numbers SQL can add up.

- `messages.model_id`: the model can change within a session, so each reply records its own.
  Back-filled from the reply's run, else from its session's current model.
- `messages.prompt_tokens`, `completion_tokens`, `cost_usd`: the numbers of `messages.usage`
  (JSON TEXT), so a session's running total and the usage overview are a SUM over an index
  (`ix_messages_usage`) instead of JSON parsed row by row. Back-filled from `usage`.

Revision ID: 0009
Revises: 0008
"""

import json
import math

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 2000
# models.USAGE_MAX_TOKENS / USAGE_MAX_COST_USD at the time of writing: larger numbers are ignored.
MAX_TOKENS = 10**12
MAX_COST = 10**9


def _number(value, limit):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if 0 <= value <= limit else None


def _columns(raw):
    try:
        usage = json.loads(raw) if raw else None
    except ValueError:
        usage = None
    usage = usage if isinstance(usage, dict) else {}
    cost = _number(usage.get("cost_usd"), MAX_COST)
    return {
        "p": int(_number(usage.get("prompt_tokens"), MAX_TOKENS) or 0),
        "c": int(_number(usage.get("completion_tokens"), MAX_TOKENS) or 0),
        "cost": float(cost) if cost is not None else None,
    }


def upgrade():
    # Plain ALTER TABLE, not batch mode: a batch would copy `messages` and lose the search
    # triggers and view that migrations 0002/0003 put on it (SQLite adds and drops columns itself).
    op.add_column("messages", sa.Column("model_id", sa.String(length=128), nullable=True))
    op.add_column("messages", sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("messages", sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("messages", sa.Column("cost_usd", sa.Float(), nullable=True))

    bind = op.get_bind()
    messages = sa.table(
        "messages",
        sa.column("id", sa.String),
        sa.column("session_id", sa.String),
        sa.column("role", sa.String),
        sa.column("usage", sa.Text),
        sa.column("model_id", sa.String),
        sa.column("prompt_tokens", sa.BigInteger),
        sa.column("completion_tokens", sa.BigInteger),
        sa.column("cost_usd", sa.Float),
    )
    runs = sa.table("runs", sa.column("message_id", sa.String), sa.column("model_id", sa.String))
    sessions = sa.table("conversation_sessions", sa.column("id", sa.String), sa.column("model_id", sa.String))
    # Two portable correlated UPDATEs: the run's model where there is a run, else the session's.
    bind.execute(
        messages.update()
        .where(messages.c.role == "assistant")
        .values(model_id=sa.select(runs.c.model_id).where(runs.c.message_id == messages.c.id).scalar_subquery())
    )
    bind.execute(
        messages.update()
        .where(messages.c.role == "assistant", messages.c.model_id.is_(None))
        .values(model_id=sa.select(sessions.c.model_id).where(sessions.c.id == messages.c.session_id).scalar_subquery())
    )
    # The numbers from the JSON, in Python (portable), a batch at a time by id.
    update = (
        messages.update()
        .where(messages.c.id == sa.bindparam("mid"))
        .values(prompt_tokens=sa.bindparam("p"), completion_tokens=sa.bindparam("c"), cost_usd=sa.bindparam("cost"))
    )
    after = ""
    while True:
        rows = bind.execute(
            sa.select(messages.c.id, messages.c.usage)
            .where(messages.c.usage.is_not(None), messages.c.id > after)
            .order_by(messages.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        bind.execute(update, [{"mid": row.id, **_columns(row.usage)} for row in rows])
        after = rows[-1].id

    op.create_index(
        "ix_messages_usage",
        "messages",
        [
            "session_id",
            "role",
            "created_at",
            "agent_id",
            "model_id",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
        ],
        unique=False,
    )


def downgrade():
    op.drop_index("ix_messages_usage", table_name="messages")
    for column in ("cost_usd", "completion_tokens", "prompt_tokens", "model_id"):
        op.drop_column("messages", column)
