"""When the owner last looked at a session: conversation_sessions.seen_at (the sidebar's marks).

Existing sessions keep NULL, which counts as seen: nothing is marked new after the upgrade.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: a batch copy of the table on SQLite would drop the search
# triggers that migration 0002 put on it. DROP COLUMN needs SQLite 3.35+.
def upgrade():
    op.add_column("conversation_sessions", sa.Column("seen_at", sa.DateTime(), nullable=True))


def downgrade():
    op.drop_column("conversation_sessions", "seen_at")
