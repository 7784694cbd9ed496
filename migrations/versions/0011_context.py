"""Context you can see: each message's token count, stored once per tokenizer.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: a batch copy of `messages` on SQLite would break the search
# view and triggers built on it (0002, 0003). SQLite (3.35+) and PostgreSQL add and drop a
# nullable column in place.


def upgrade():
    op.add_column("messages", sa.Column("token_count", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("token_counter", sa.String(length=32), nullable=True))


def downgrade():
    op.drop_column("messages", "token_counter")
    op.drop_column("messages", "token_count")
