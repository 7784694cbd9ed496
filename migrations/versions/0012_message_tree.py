"""Conversations become trees: a message names its parent, a session its current leaf.

- `messages.parent_id`: the previous message on the message's path (NULL for a first message).
  Editing a message or regenerating a reply adds a sibling (same parent) instead of replacing it.
- `conversation_sessions.current_leaf_id`: the last message of the path the page shows and the
  agent is sent. No foreign key: the session row is written before its first message.
- Every existing session becomes one path: each message's parent is the message before it (by
  created_at, then id), the leaf its last message. Done in batches of sessions, with portable SQL.

Plain ALTER TABLE ... ADD COLUMN on SQLite (not batch mode): rebuilding `messages` or
`conversation_sessions` would drop the full-text search triggers defined on them.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SESSIONS_PER_BATCH = 200


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("ALTER TABLE messages ADD COLUMN parent_id VARCHAR(36) REFERENCES messages (id)")
        op.execute("ALTER TABLE conversation_sessions ADD COLUMN current_leaf_id VARCHAR(36)")
    else:
        op.add_column("messages", sa.Column("parent_id", sa.String(length=36), nullable=True))
        op.create_foreign_key(op.f("fk_messages_parent_id_messages"), "messages", "messages", ["parent_id"], ["id"])
        op.add_column("conversation_sessions", sa.Column("current_leaf_id", sa.String(length=36), nullable=True))
    # Deleting a session deletes its messages: each one looks up its children by parent_id.
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"], unique=False)
    backfill(bind)


def backfill(bind) -> None:
    """Every session as a single path, SESSIONS_PER_BATCH sessions at a time (keyset on id)."""
    sessions = sa.table("conversation_sessions", sa.column("id"), sa.column("current_leaf_id"))
    messages = sa.table(
        "messages", sa.column("id"), sa.column("session_id"), sa.column("created_at"), sa.column("parent_id")
    )
    after = ""
    while True:
        ids = (
            bind.execute(
                sa.select(sessions.c.id).where(sessions.c.id > after).order_by(sessions.c.id).limit(SESSIONS_PER_BATCH)
            )
            .scalars()
            .all()
        )
        if not ids:
            return
        after = ids[-1]
        rows = bind.execute(
            sa.select(messages.c.session_id, messages.c.id)
            .where(messages.c.session_id.in_(ids))
            .order_by(messages.c.session_id, messages.c.created_at, messages.c.id)
        ).all()
        parents, leaves, previous = [], {}, {}
        for session_id, message_id in rows:
            if session_id in previous:
                parents.append({"mid": message_id, "pid": previous[session_id]})
            previous[session_id] = leaves[session_id] = message_id
        if parents:
            bind.execute(
                messages.update().where(messages.c.id == sa.bindparam("mid")).values(parent_id=sa.bindparam("pid")),
                parents,
            )
        if leaves:
            bind.execute(
                sessions.update()
                .where(sessions.c.id == sa.bindparam("sid"))
                .values(current_leaf_id=sa.bindparam("leaf")),
                [{"sid": sid, "leaf": leaf} for sid, leaf in leaves.items()],
            )


def downgrade():
    op.drop_index("ix_messages_parent_id", table_name="messages")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite ≥ 3.35 drops a column with an inline REFERENCES clause in place (no rebuild).
        op.execute("ALTER TABLE messages DROP COLUMN parent_id")
        op.execute("ALTER TABLE conversation_sessions DROP COLUMN current_leaf_id")
    else:
        op.drop_constraint(op.f("fk_messages_parent_id_messages"), "messages", type_="foreignkey")
        op.drop_column("messages", "parent_id")
        op.drop_column("conversation_sessions", "current_leaf_id")
