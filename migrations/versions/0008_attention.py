"""When the owner last looked at a session: conversation_sessions.seen_at (the sidebar's marks).

Existing sessions keep NULL, which counts as seen: nothing is marked new after the upgrade.

Revision ID: 0008
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("conversation_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("conversation_sessions", schema=None) as batch_op:
        batch_op.drop_column("seen_at")
