"""A reply's timeline (its agent's status updates) kept with the message: messages.steps (JSON).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: a batch would copy `messages` into a new table, and on SQLite
# that breaks the full-text search view and drops the triggers built on it (0002, 0003). Adding
# and dropping a nullable column needs no copy on SQLite (3.35+) or PostgreSQL.


def upgrade():
    op.add_column("messages", sa.Column("steps", sa.Text(), nullable=True))


def downgrade():
    op.execute("ALTER TABLE messages DROP COLUMN steps")
