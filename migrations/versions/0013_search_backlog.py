"""Full-text search: the triggers queue what to index; a background step indexes it in batches.

Under 0002/0003 the insert triggers wrote a new session's title and the user's message into FTS5
inside the send's own transaction. FTS5 writes its pending terms out as a new segment at every
commit (three prefix indexes, the structure record, the doc sizes): about 0.3 ms of the send,
all of it before the agent gets the request (bench/relay.py, #9). Now the triggers only add the
document's id to `search_backlog`; `sessions.search.index_queued` moves queued documents into
FTS5 in one transaction (the run housekeeping does so every INDEX_SECONDS on its own thread, a
search does it first so that it sees every ended message, `flask dev seed` after each batch).

The rule that keeps FTS5 exact: a queued document has nothing in FTS5. So the update and delete
triggers take text out of FTS5 only for a document that is not queued (taking out text that was
never put in would corrupt an external-content index), and a changed, ended message is queued
again rather than indexed; `index_queued` indexes each queued document as it is by then. The
view FTS5 reads its external content through leaves queued messages out, so 'rebuild' and
'integrity-check' agree with the index at every moment. Doc ids are allocated as before.

PostgreSQL: unchanged (its GIN index follows the column by itself).

Revision ID: 0013
Revises: 0012
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Frozen here, as in 0002 and 0003.
ENDED = "('complete', 'cancelled', 'error', 'interrupted')"
USER_SPAN = 4194304
SESSION_SPAN = 1048576
MAX_USER_ID = 2097151

NOT_QUEUED = "NOT EXISTS (SELECT 1 FROM search_backlog AS b WHERE b.kind = '{kind}' AND b.doc_id = d.doc_id)"

SOURCE_VIEW = (
    "CREATE VIEW search_message_source AS "
    "SELECT d.doc_id AS doc_id, m.content AS body "
    "FROM search_message_docs AS d JOIN messages AS m ON m.id = d.message_id "
    f"WHERE m.status IN {ENDED} AND {NOT_QUEUED.format(kind='message')}"
)

UNINDEX_OLD_MESSAGE = f"""
          INSERT INTO search_messages (search_messages, rowid, body)
            SELECT 'delete', d.doc_id, old.content FROM search_message_docs AS d
             WHERE d.message_id = old.id AND old.status IN {ENDED} AND {NOT_QUEUED.format(kind="message")};"""

TRIGGERS = {
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
          INSERT INTO search_backlog (kind, doc_id)
            SELECT 'title', doc_id FROM search_session_docs WHERE session_id = new.id;
        END""",
    # search_titles_au stays as 0002 made it: updating a title that is not in FTS5 yet changes
    # nothing, and the queued title is indexed as it is by then.
    "search_titles_ad": """
        CREATE TRIGGER search_titles_ad AFTER DELETE ON conversation_sessions BEGIN
          DELETE FROM search_titles
            WHERE rowid = (SELECT doc_id FROM search_session_docs WHERE session_id = old.id);
          DELETE FROM search_backlog
            WHERE kind = 'title' AND doc_id = (SELECT doc_id FROM search_session_docs WHERE session_id = old.id);
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
          INSERT INTO search_backlog (kind, doc_id)
            SELECT 'message', doc_id FROM search_message_docs WHERE message_id = new.id AND new.status IN {ENDED};
        END""",
    "search_messages_au": f"""
        CREATE TRIGGER search_messages_au AFTER UPDATE OF content, status ON messages
        WHEN old.content IS NOT new.content OR old.status IS NOT new.status BEGIN{UNINDEX_OLD_MESSAGE}
          INSERT OR IGNORE INTO search_backlog (kind, doc_id)
            SELECT 'message', doc_id FROM search_message_docs WHERE message_id = new.id AND new.status IN {ENDED};
        END""",
    "search_messages_ad": f"""
        CREATE TRIGGER search_messages_ad AFTER DELETE ON messages BEGIN{UNINDEX_OLD_MESSAGE}
          DELETE FROM search_backlog
            WHERE kind = 'message' AND doc_id = (SELECT doc_id FROM search_message_docs WHERE message_id = old.id);
          DELETE FROM search_message_docs WHERE message_id = old.id;
        END""",
}

# What sessions.search.index_queued does, frozen for the downgrade.
INDEX_QUEUED = (
    "INSERT INTO search_titles (rowid, title) SELECT d.doc_id, s.title FROM search_backlog AS b "
    "JOIN search_session_docs AS d ON d.doc_id = b.doc_id JOIN conversation_sessions AS s ON s.id = d.session_id "
    "WHERE b.kind = 'title'",
    "INSERT INTO search_messages (rowid, body) SELECT d.doc_id, m.content FROM search_backlog AS b "
    "JOIN search_message_docs AS d ON d.doc_id = b.doc_id JOIN messages AS m ON m.id = d.message_id "
    f"WHERE b.kind = 'message' AND m.status IN {ENDED}",
    "DELETE FROM search_backlog",
)


def _earlier(filename: str):
    """An earlier migration's module, for the trigger bodies it froze (the downgrade's target)."""
    spec = importlib.util.spec_from_file_location(f"_switchboard_{filename[:4]}", Path(__file__).with_name(filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replace(triggers: dict) -> None:
    for name in triggers:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for ddl in triggers.values():
        op.execute(ddl)


def upgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    # kind: 'title' (doc_id in search_session_docs) or 'message' (in search_message_docs).
    op.execute(
        "CREATE TABLE search_backlog (kind TEXT NOT NULL, doc_id INTEGER NOT NULL, PRIMARY KEY (kind, doc_id)) "
        "WITHOUT ROWID"  # one b-tree to write, not a table and its key's index
    )
    op.execute("DROP VIEW search_message_source")
    op.execute(SOURCE_VIEW)
    _replace(TRIGGERS)


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in INDEX_QUEUED:  # the queue is empty, so every document is in FTS5 as 0003 keeps it
        op.execute(statement)
    op.execute("DROP VIEW search_message_source")
    search_0003 = _earlier("0003_index_ended_replies.py")
    op.execute(f"{search_0003.SOURCE_VIEW} WHERE m.status IN {search_0003.ENDED}")
    triggers = search_0003.message_triggers(only_ended=True)
    for name in ("search_titles_ai", "search_titles_ad"):
        triggers[name] = _earlier("0002_sessions_search.py").SQLITE_TRIGGERS[name]
    _replace(triggers)
    op.execute("DROP TABLE search_backlog")
