"""Full-text search indexes a message once it has ended, not at every flush of a streaming reply.

Under 0002 the triggers re-indexed a reply's whole text at every flush of its run (every 250 ms):
FTS5 'delete' of the old text, insert of the new one, each tokenizing the reply so far. That is
quadratic in the length of a reply (1.4 ms a flush at 45,000 characters) and sat on the path to
the first token for the new, empty reply. Now only a message whose status is final is in the
index: the user's message at once, a reply when its run ends (complete, cancelled, error or
interrupted). The view FTS5 reads its external content through lists only those messages, so
'rebuild' and 'integrity-check' agree with the triggers. Every message still gets its
`search_message_docs` row (its rowid) when it is inserted.

PostgreSQL: unchanged (its GIN index follows the column by itself).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ENDED = "('complete', 'cancelled', 'error', 'interrupted')"  # models.FINAL_STATUSES, frozen here
SESSION_SPAN = 1048576  # as in 0002

SOURCE_VIEW = (
    "CREATE VIEW search_message_source AS "
    "SELECT d.doc_id AS doc_id, m.content AS body "
    "FROM search_message_docs AS d JOIN messages AS m ON m.id = d.message_id"
)


def message_triggers(only_ended: bool) -> dict[str, str]:
    """The three message triggers: 0002's (every message in the index) or 0003's (ended only)."""
    old_ended = f" AND old.status IN {ENDED}" if only_ended else ""
    new_ended = f" AND new.status IN {ENDED}" if only_ended else ""
    # 0003: one trigger for every change of text or status: take out what was indexed (only an
    # ended message is), put in what should be (only if it has ended).
    update_of, changed = (
        ("content, status", "old.content IS NOT new.content OR old.status IS NOT new.status")
        if only_ended
        else ("content", "old.content IS NOT new.content")
    )
    delete_old = f"""
          INSERT INTO search_messages (search_messages, rowid, body)
            SELECT 'delete', doc_id, old.content FROM search_message_docs
             WHERE message_id = old.id{old_ended};"""
    insert_new = f"""
          INSERT INTO search_messages (rowid, body)
            SELECT doc_id, new.content FROM search_message_docs
             WHERE message_id = new.id{new_ended};"""
    return {
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
            WHERE next_doc <= last_doc;{insert_new}
        END""",
        "search_messages_au": f"""
        CREATE TRIGGER search_messages_au AFTER UPDATE OF {update_of} ON messages
        WHEN {changed} BEGIN{delete_old}{insert_new}
        END""",
        "search_messages_ad": f"""
        CREATE TRIGGER search_messages_ad AFTER DELETE ON messages BEGIN{delete_old}
          DELETE FROM search_message_docs WHERE message_id = old.id;
        END""",
    }


def _replace_triggers(triggers: dict) -> None:
    for name in triggers:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for ddl in triggers.values():
        op.execute(ddl)


def upgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    # Under 0002 the index held every message's current text: take out the live ones.
    op.execute(
        "INSERT INTO search_messages (search_messages, rowid, body) "
        "SELECT 'delete', d.doc_id, m.content FROM search_message_docs AS d "
        f"JOIN messages AS m ON m.id = d.message_id WHERE m.status NOT IN {ENDED}"
    )
    op.execute("DROP VIEW search_message_source")
    op.execute(f"{SOURCE_VIEW} WHERE m.status IN {ENDED}")
    _replace_triggers(message_triggers(only_ended=True))


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO search_messages (rowid, body) "
        "SELECT d.doc_id, m.content FROM search_message_docs AS d "
        f"JOIN messages AS m ON m.id = d.message_id WHERE m.status NOT IN {ENDED}"
    )
    op.execute("DROP VIEW search_message_source")
    op.execute(SOURCE_VIEW)
    _replace_triggers(message_triggers(only_ended=False))
