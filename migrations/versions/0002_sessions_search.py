"""Sessions: keyset-pagination indices and full-text search over titles and message contents.

SQLite: two FTS5 indexes kept in step by triggers. FTS5 needs integer rowids; sessions and
messages have text ids (and their implicit rowids may change on VACUUM), so the rowids are made
here, and laid out so that the search can ask FTS5 for rowid *ranges*:
  - a session's key  k     = user_id * 2^22 + (1, 2, ... per user)        `search_session_docs`
  - a message's rowid      = k * 2^20 + (1, 2, ... per session)            `search_message_docs`
  So one user's messages are one rowid range (a user's search costs what their own hits cost,
  not everyone's), `rowid >> 20` is the session of a hit (no join), and "does session k match?"
  is a query over a range of at most 2^20 rowids, which FTS5 answers with a few seeks.
  - `search_titles` indexes conversation_sessions.title with rowid k (own content: titles are short).
  - `search_messages` indexes messages.content; it is an *external-content* table (the text is not
    stored twice), reading the text back through the view `search_message_source`.
  - `search_*_vocab` (fts5vocab) list the indexed words, to expand a typed prefix into words.
  Triggers on INSERT / UPDATE OF content|title / DELETE keep both in step, including deletions
  cascaded from a session (SQLite fires the child table's triggers for foreign-key actions).
  Existing rows are indexed by the upgrade itself. (Limits, far beyond use: user ids below 2^21,
  2^22 - 1 sessions per user and 2^20 - 1 messages per session are indexed; rows past them are
  stored but not searchable.)

PostgreSQL: GIN indexes on to_tsvector('simple', ...) of the same two columns; the query uses the
identical expression, so PostgreSQL keeps them in step by itself.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (name, table, columns). Keyset pagination needs the tie-breaker `id` in the index, for one user
# (sidebar, sessions page) and for everyone (admin listing, retention commands); the trailing
# agent, model and archived columns let a filtered walk test rows in the index without reading
# the table. The messages index answers "status of the latest reply" with one covering seek.
INDICES = [
    (
        "ix_sessions_user_updated_id",
        "conversation_sessions",
        ["user_id", "updated_at", "id", "agent_id", "model_id", "archived_at"],
    ),
    (
        "ix_sessions_user_created_id",
        "conversation_sessions",
        ["user_id", "created_at", "id", "agent_id", "model_id", "archived_at"],
    ),
    ("ix_sessions_updated_id", "conversation_sessions", ["updated_at", "id", "agent_id", "model_id", "archived_at"]),
    ("ix_sessions_created_id", "conversation_sessions", ["created_at", "id", "agent_id", "model_id", "archived_at"]),
    ("ix_sessions_archived_at", "conversation_sessions", ["archived_at"]),
    ("ix_messages_session_role_created", "messages", ["session_id", "role", "created_at", "status"]),
]

USER_SPAN = 4194304  # 2^22 session keys per user
SESSION_SPAN = 1048576  # 2^20 message rowids per session
MAX_USER_ID = 2097151  # keeps every rowid below 2^63

SQLITE_TRIGGERS = {
    "search_titles_ai": f"""
        CREATE TRIGGER search_titles_ai AFTER INSERT ON conversation_sessions
        WHEN new.user_id BETWEEN 0 AND {MAX_USER_ID} BEGIN
          INSERT INTO search_session_docs (doc_id, session_id)
            SELECT next_key, new.id FROM (
              SELECT coalesce(
                       (SELECT max(d.doc_id) FROM search_session_docs AS d
                         WHERE d.doc_id BETWEEN new.user_id * {USER_SPAN} AND new.user_id * {USER_SPAN} + {USER_SPAN - 1}),
                       new.user_id * {USER_SPAN}) + 1 AS next_key)
            WHERE next_key <= new.user_id * {USER_SPAN} + {USER_SPAN - 1};
          INSERT INTO search_titles (rowid, title)
            SELECT doc_id, new.title FROM search_session_docs WHERE session_id = new.id;
        END""",
    "search_titles_au": """
        CREATE TRIGGER search_titles_au AFTER UPDATE OF title ON conversation_sessions
        WHEN old.title IS NOT new.title BEGIN
          UPDATE search_titles SET title = new.title
            WHERE rowid = (SELECT doc_id FROM search_session_docs WHERE session_id = new.id);
        END""",
    "search_titles_ad": """
        CREATE TRIGGER search_titles_ad AFTER DELETE ON conversation_sessions BEGIN
          DELETE FROM search_titles
            WHERE rowid = (SELECT doc_id FROM search_session_docs WHERE session_id = old.id);
          DELETE FROM search_session_docs WHERE session_id = old.id;
        END""",
    "search_messages_ai": f"""
        CREATE TRIGGER search_messages_ai AFTER INSERT ON messages BEGIN
          INSERT INTO search_message_docs (doc_id, message_id)
            SELECT next_doc, new.id FROM (
              SELECT coalesce(
                       (SELECT max(d.doc_id) FROM search_message_docs AS d
                         WHERE d.doc_id BETWEEN s.doc_id * {SESSION_SPAN} AND s.doc_id * {SESSION_SPAN} + {SESSION_SPAN - 1}),
                       s.doc_id * {SESSION_SPAN}) + 1 AS next_doc,
                     s.doc_id * {SESSION_SPAN} + {SESSION_SPAN - 1} AS last_doc
                FROM search_session_docs AS s WHERE s.session_id = new.session_id)
            WHERE next_doc <= last_doc;
          INSERT INTO search_messages (rowid, body)
            SELECT doc_id, new.content FROM search_message_docs WHERE message_id = new.id;
        END""",
    "search_messages_au": """
        CREATE TRIGGER search_messages_au AFTER UPDATE OF content ON messages
        WHEN old.content IS NOT new.content BEGIN
          INSERT INTO search_messages (search_messages, rowid, body)
            SELECT 'delete', doc_id, old.content FROM search_message_docs WHERE message_id = old.id;
          INSERT INTO search_messages (rowid, body)
            SELECT doc_id, new.content FROM search_message_docs WHERE message_id = new.id;
        END""",
    "search_messages_ad": """
        CREATE TRIGGER search_messages_ad AFTER DELETE ON messages BEGIN
          INSERT INTO search_messages (search_messages, rowid, body)
            SELECT 'delete', doc_id, old.content FROM search_message_docs WHERE message_id = old.id;
          DELETE FROM search_message_docs WHERE message_id = old.id;
        END""",
}

# unicode61 folds case and (with remove_diacritics 2) accents. prefix='3 4' indexes 3- and
# 4-letter prefixes, so the first letters typed are one lookup; longer prefixes are expanded into
# words through the fts5vocab tables (a bare prefix query merges every matching word's list).
FTS_OPTIONS = "tokenize = 'unicode61 remove_diacritics 2', prefix = '3 4'"


def backfill_statements() -> list[str]:
    """Index every existing session and message (the same layout as the triggers)."""
    return [
        "INSERT INTO search_session_docs (doc_id, session_id) "
        f"SELECT user_id * {USER_SPAN} + row_number() OVER (PARTITION BY user_id ORDER BY created_at, id), id "
        f"FROM conversation_sessions WHERE user_id BETWEEN 0 AND {MAX_USER_ID}",
        "INSERT INTO search_message_docs (doc_id, message_id) "
        f"SELECT s.doc_id * {SESSION_SPAN} + row_number() OVER (PARTITION BY m.session_id ORDER BY m.created_at, m.id), "
        "m.id FROM messages AS m JOIN search_session_docs AS s ON s.session_id = m.session_id",
        "INSERT INTO search_messages (search_messages) VALUES ('rebuild')",
        "INSERT INTO search_titles (rowid, title) SELECT d.doc_id, s.title "
        "FROM search_session_docs AS d JOIN conversation_sessions AS s ON s.id = d.session_id",
    ]


def _sqlite_upgrade() -> None:
    op.create_table(
        "search_session_docs",
        sa.Column("doc_id", sa.Integer(), primary_key=True),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.UniqueConstraint("session_id", name="uq_search_session_docs_session_id"),
    )
    op.create_table(
        "search_message_docs",
        sa.Column("doc_id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.UniqueConstraint("message_id", name="uq_search_message_docs_message_id"),
    )
    op.execute(
        "CREATE VIEW search_message_source AS "
        "SELECT d.doc_id AS doc_id, m.content AS body "
        "FROM search_message_docs AS d JOIN messages AS m ON m.id = d.message_id"
    )
    op.execute(
        "CREATE VIRTUAL TABLE search_messages USING fts5("
        f"body, content = 'search_message_source', content_rowid = 'doc_id', {FTS_OPTIONS})"
    )
    op.execute(f"CREATE VIRTUAL TABLE search_titles USING fts5(title, {FTS_OPTIONS})")
    # The vocabulary (term, documents, occurrences) lets a search expand a typed prefix into words.
    op.execute("CREATE VIRTUAL TABLE search_messages_vocab USING fts5vocab(search_messages, 'row')")
    op.execute("CREATE VIRTUAL TABLE search_titles_vocab USING fts5vocab(search_titles, 'row')")
    # Index what exists already, then let the triggers keep it in step.
    for statement in backfill_statements():
        op.execute(statement)
    for ddl in SQLITE_TRIGGERS.values():
        op.execute(ddl)


def _sqlite_downgrade() -> None:
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS search_titles_vocab")
    op.execute("DROP TABLE IF EXISTS search_messages_vocab")
    op.execute("DROP TABLE IF EXISTS search_titles")
    op.execute("DROP TABLE IF EXISTS search_messages")
    op.execute("DROP VIEW IF EXISTS search_message_source")
    op.drop_table("search_session_docs")
    op.drop_table("search_message_docs")


def _postgresql_upgrade() -> None:
    op.execute("CREATE INDEX ix_messages_content_tsv ON messages USING gin (to_tsvector('simple', content))")
    op.execute("CREATE INDEX ix_sessions_title_tsv ON conversation_sessions USING gin (to_tsvector('simple', title))")


def _postgresql_downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_sessions_title_tsv")
    op.execute("DROP INDEX IF EXISTS ix_messages_content_tsv")


def upgrade():
    for name, table, columns in INDICES:
        op.create_index(name, table, columns, unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_upgrade()
    elif dialect == "postgresql":
        _postgresql_upgrade()


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_downgrade()
    elif dialect == "postgresql":
        _postgresql_downgrade()
    for name, table, _columns in reversed(INDICES):
        op.drop_index(name, table_name=table)
