"""Full-text search over session titles and message contents, with highlighted snippets.

SQLite: the FTS5 tables made by migration 0002, whose rowids encode user → session → message;
since 0003 a message is in the index once it has ended (a streaming reply when its run ends, not
at every flush); since 0013 the triggers queue documents in `search_backlog` and `index_queued`
indexes them in batches, off the send (the run housekeeping every second; a search first).
PostgreSQL: GIN indexes on to_tsvector('simple', ...), queried with exactly the indexed expression.

The search text never reaches either query language as syntax: it is cut into words (letters and
digits only), each word is quoted, and the last word of three or more characters matches as a
prefix, so that results follow the person's typing. Snippets come back with control-character
markers, are HTML-escaped, and only then get their <mark> tags.

Two plans, chosen per query by counting (up to COMMON_HITS) the matching messages of the people
being listed:
  - "hits" (rare words): collect every hit and keep the sessions they belong to;
  - "probe" (common words): walk the sessions in list order and ask, per session, whether it
    matches; a page fills after a few dozen sessions. The walk is capped at PROBE_BUDGET sessions
    a page: a page may then hold fewer rows, and its next cursor continues the walk.
Either way the work is bounded by few hits or by few sessions, never by the size of the archive.
"""

from __future__ import annotations

import logging
import re
import unicodedata

from markupsafe import Markup, escape
from sqlalchemy import (
    bindparam,
    column,
    exists,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    table,
    text,
    union_all,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import aliased

from ..database import WRITE_WAIT_OPTION, DatabaseUnavailable
from ..extensions import db
from ..models import FINAL_STATUSES, ConversationSession, Message

log = logging.getLogger("switchboard.search")

START, STOP = "\x02", "\x03"
MAX_TERMS = 8
PREFIX_MIN = 3
SNIPPET_TOKENS = 20
COMMON_HITS = 5_000
PROBE_BUDGET = 1_000
CATCH_UP_WAIT_SECONDS = 0.5
_WORD = re.compile(r"[^\W_]+")


def terms(text_: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text_ or "")][:MAX_TERMS]


def marked(raw: str | None) -> Markup | None:
    """Escape a snippet, then turn its markers into <mark>; unbalanced markers are dropped."""
    if raw is None:
        return None
    depth, balanced = 0, True
    for char in raw:
        if char == START:
            balanced &= depth == 0
            depth = 1
        elif char == STOP:
            balanced &= depth == 1
            depth = 0
    escaped = str(escape(raw))
    if not balanced or depth:
        return Markup(escaped.replace(START, "").replace(STOP, ""))
    return Markup(escaped.replace(START, "<mark>").replace(STOP, "</mark>"))


def backend():
    return PostgresSearch() if db.engine.dialect.name == "postgresql" else SqliteSearch()


# ---- SQLite FTS5 --------------------------------------------------------------------------------

USER_SPAN = 1 << 22  # session keys per user: k = user_id * USER_SPAN + n
SESSION_SPAN = 1 << 20  # message rowids per session: rowid = k * SESSION_SPAN + n
USER_ROWIDS = USER_SPAN * SESSION_SPAN
INDEXED_PREFIXES = (3, 4)  # FTS5 prefix='3 4' (migration 0002)
MAX_EXPANSION = 100

fts_messages = table("search_messages", column("rowid"))
fts_titles = table("search_titles", column("rowid"))
session_docs = table("search_session_docs", column("doc_id"), column("session_id"))
_MATCH_MESSAGES = literal_column("search_messages").op("MATCH")
_MATCH_TITLES = literal_column("search_titles").op("MATCH")


def _fold(word: str) -> str:
    """Lower case without accents, as FTS5's unicode61 tokenizer indexes it."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


ENDED = "(" + ", ".join(f"'{status}'" for status in FINAL_STATUSES) + ")"
INDEX_QUEUED = (
    "INSERT INTO search_titles (rowid, title) SELECT d.doc_id, s.title FROM search_backlog AS b "
    "JOIN search_session_docs AS d ON d.doc_id = b.doc_id JOIN conversation_sessions AS s ON s.id = d.session_id "
    "WHERE b.kind = 'title'",
    # A queued message that has not ended (or is gone) is only taken off the queue.
    "INSERT INTO search_messages (rowid, body) SELECT d.doc_id, m.content FROM search_backlog AS b "
    "JOIN search_message_docs AS d ON d.doc_id = b.doc_id JOIN messages AS m ON m.id = d.message_id "
    f"WHERE b.kind = 'message' AND m.status IN {ENDED}",
)


def index_queued(conn) -> int:
    """Index every queued document as it is now and empty the queue, in the caller's
    transaction (migration 0013); the number of documents taken off the queue."""
    if conn.dialect.name != "sqlite":
        return 0
    for statement in INDEX_QUEUED:
        conn.execute(text(statement))
    return conn.execute(text("DELETE FROM search_backlog")).rowcount


def catch_up(engine, write_wait: float | None = None) -> int:
    """`index_queued` in a transaction of its own, if anything is queued (a read otherwise)."""
    if engine.dialect.name != "sqlite":
        return 0
    with engine.connect() as conn:
        if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM search_backlog)")).scalar():
            return 0
        if write_wait is not None:
            conn = conn.execution_options(**{WRITE_WAIT_OPTION: write_wait})
        indexed = index_queued(conn)
        conn.commit()
        return indexed


class SqliteSearch:
    def catch_up(self) -> None:
        """Index what was queued since the housekeeping last did (up to a second's sends), so
        that a search finds every ended message. When the write lock cannot be had quickly the
        search goes on without them rather than fail."""
        try:
            catch_up(db.engine, write_wait=CATCH_UP_WAIT_SECONDS)
        except (DatabaseUnavailable, OperationalError) as exc:
            log.warning("search went ahead without indexing the queued documents: %s", exc)

    def expression(self, words: list[str]) -> str:
        """An FTS5 query: every word (quoted), the last one as a prefix."""
        parts = [f'"{word}"' for word in words[:-1]]  # words hold letters and digits only
        last = words[-1]
        if len(last) < PREFIX_MIN:
            parts.append(f'"{last}"')
        elif len(last) in INDEXED_PREFIXES:
            parts.append(f'"{last}"*')  # a prefix index answers this with one lookup
        else:
            # A longer prefix becomes the words it stands for: FTS5 would otherwise merge the lists
            # of all those words on every execution, which the per-session probes repeat.
            expanded = self._expand(_fold(last))
            parts.append("(" + " OR ".join(f'"{t}"' for t in expanded) + ")" if expanded else f'"{last}"*')
        return " AND ".join(parts)

    @staticmethod
    def _expand(prefix: str) -> list[str] | None:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        found: set[str] = set()
        for vocab in ("search_messages_vocab", "search_titles_vocab"):
            found.update(
                db.session.execute(
                    text(f"SELECT term FROM {vocab} WHERE term >= :start AND term < :end LIMIT :limit"),
                    {"start": prefix, "end": end, "limit": MAX_EXPANSION + 1},
                ).scalars()
            )
        return sorted(found) if 0 < len(found) <= MAX_EXPANSION else None

    @staticmethod
    def _ranges(owner_id: int | None):
        """(message rowid range, title rowid range) of one user's sessions; None for everyone."""
        if owner_id is None:
            return None, None
        return (
            (owner_id * USER_ROWIDS, (owner_id + 1) * USER_ROWIDS - 1),
            (owner_id * USER_SPAN, (owner_id + 1) * USER_SPAN - 1),
        )

    def is_common(self, expression: str, owner_id: int | None) -> bool:
        counted = 0
        for name, bounds in zip(("search_messages", "search_titles"), self._ranges(owner_id)):
            where = f"{name} MATCH :e" + (" AND rowid BETWEEN :lo AND :hi" if bounds else "")
            params = {"e": expression, "cap": COMMON_HITS}
            if bounds:
                params.update(lo=bounds[0], hi=bounds[1])
            counted += db.session.execute(
                text(f"SELECT count(*) FROM (SELECT 1 FROM {name} WHERE {where} LIMIT :cap)"), params
            ).scalar()
        return counted >= COMMON_HITS

    def restrict(self, stmt, expression: str, owner_id: int | None, common: bool, session_id_col):
        """`stmt` limited to sessions that match, with a `doc` column: the first matching message."""
        stmt = stmt.join(session_docs, session_docs.c.session_id == session_id_col)
        key = session_docs.c.doc_id
        if not common:
            message_range, title_range = self._ranges(owner_id)
            in_messages = (
                select((fts_messages.c.rowid.op(">>")(20)).label("k"), func.min(fts_messages.c.rowid).label("doc"))
                .where(_MATCH_MESSAGES(bindparam("fts_m", expression)))
                .group_by(literal_column("k"))
            )
            in_titles = select(fts_titles.c.rowid.label("k"), null().label("doc")).where(
                _MATCH_TITLES(bindparam("fts_t", expression))
            )
            if message_range:
                in_messages = in_messages.where(fts_messages.c.rowid.between(*message_range))
                in_titles = in_titles.where(fts_titles.c.rowid.between(*title_range))
            both = union_all(in_messages, in_titles).subquery("matches")
            hits = select(both.c.k, func.min(both.c.doc).label("doc")).group_by(both.c.k).subquery("hits")
            return stmt.join(hits, hits.c.k == key).add_columns(hits.c.doc.label("doc"))
        in_session = fts_messages.c.rowid.between(key * SESSION_SPAN, key * SESSION_SPAN + (SESSION_SPAN - 1))
        first_doc = (
            select(func.min(fts_messages.c.rowid))
            .where(_MATCH_MESSAGES(bindparam("fts_d", expression)), in_session)
            .scalar_subquery()
        )
        message_hit = exists(
            select(fts_messages.c.rowid).where(_MATCH_MESSAGES(bindparam("fts_m", expression)), in_session)
        )
        title_hit = exists(
            select(fts_titles.c.rowid).where(_MATCH_TITLES(bindparam("fts_t", expression)), fts_titles.c.rowid == key)
        )
        return stmt.where(or_(message_hit, title_hit)).add_columns(first_doc.label("doc"))

    def decorate(self, expression: str, rows: list, docs: dict) -> None:
        # One statement of single-rowid lookups (FTS5 seeks each), not a scan of every hit.
        wanted = sorted({doc for doc in docs.values() if doc is not None})
        snippets = titles = {}
        if wanted:
            part = (
                "SELECT rowid, snippet(search_messages, 0, :start, :stop, '…', :tokens) FROM search_messages "
                "WHERE search_messages MATCH :e AND rowid = :d{n}"
            )
            params = {"start": START, "stop": STOP, "tokens": SNIPPET_TOKENS, "e": expression}
            params.update({f"d{n}": doc for n, doc in enumerate(wanted)})
            sql = " UNION ALL ".join(part.format(n=n) for n in range(len(wanted)))
            snippets = dict(db.session.execute(text(sql), params).all())
        keys = dict(
            db.session.execute(
                select(session_docs.c.doc_id, session_docs.c.session_id).where(
                    session_docs.c.session_id.in_([row.session.id for row in rows])
                )
            ).all()
        )
        if keys:
            part = (
                "SELECT rowid, highlight(search_titles, 0, :start, :stop) FROM search_titles "
                "WHERE search_titles MATCH :e AND rowid = :k{n}"
            )
            params = {"start": START, "stop": STOP, "e": expression}
            params.update({f"k{n}": key for n, key in enumerate(keys)})
            sql = " UNION ALL ".join(part.format(n=n) for n in range(len(keys)))
            titles = {keys[key]: title for key, title in db.session.execute(text(sql), params).all()}
        for row in rows:
            doc = docs.get(row.session.id)
            row.snippet_html = marked(snippets.get(doc)) if doc is not None else None
            row.title_html = marked(titles.get(row.session.id))


# ---- PostgreSQL ---------------------------------------------------------------------------------

_CONFIG = literal_column("'simple'::regconfig")
_HEADLINE = f"StartSel={START}, StopSel={STOP}, MaxWords=24, MinWords=8, MaxFragments=1, FragmentDelimiter=…"


class PostgresSearch:
    def catch_up(self) -> None:
        """Nothing to do: PostgreSQL's GIN indexes follow their columns by themselves."""

    def expression(self, words: list[str]) -> str:
        """A to_tsquery text: the words joined by & (letters and digits only), the last a prefix."""
        parts = list(words)
        if len(words[-1]) >= PREFIX_MIN:
            parts[-1] += ":*"
        return " & ".join(parts)

    @staticmethod
    def _matches(column_, name: str):
        return func.to_tsvector(_CONFIG, column_).op("@@")(func.to_tsquery(_CONFIG, bindparam(name)))

    def is_common(self, expression: str, owner_id: int | None) -> bool:
        S = ConversationSession
        messages = select(literal(1)).select_from(Message).where(self._matches(Message.content, "tsq_c"))
        titles = select(literal(1)).select_from(S).where(self._matches(S.title, "tsq_c"))
        if owner_id is not None:
            messages = messages.join(S, S.id == Message.session_id).where(S.user_id == owner_id)
            titles = titles.where(S.user_id == owner_id)
        counted = 0
        for limited in (messages.limit(COMMON_HITS), titles.limit(COMMON_HITS)):
            counted += db.session.execute(
                select(func.count()).select_from(limited.subquery()), {"tsq_c": expression}
            ).scalar()
        return counted >= COMMON_HITS

    def restrict(self, stmt, expression: str, owner_id: int | None, common: bool, session_id_col):
        S = ConversationSession
        if not common:
            in_messages = select(Message.session_id.label("session_id"), Message.id.label("doc")).where(
                self._matches(Message.content, "tsq_m")
            )
            in_titles = select(S.id.label("session_id"), literal(None, Message.id.type).label("doc")).where(
                self._matches(S.title, "tsq_t")
            )
            both = union_all(in_messages, in_titles).subquery("matches")
            hits = (
                select(both.c.session_id, func.min(both.c.doc).label("doc"))
                .group_by(both.c.session_id)
                .subquery("hits")
            )
            stmt = stmt.join(hits, hits.c.session_id == session_id_col).add_columns(hits.c.doc.label("doc"))
        else:
            inner, first = aliased(Message), aliased(Message)
            message_hit = exists(
                select(inner.id).where(inner.session_id == session_id_col, self._matches(inner.content, "tsq_m"))
            )
            first_doc = (
                select(func.min(first.id))
                .where(first.session_id == session_id_col, self._matches(first.content, "tsq_d"))
                .scalar_subquery()
            )
            stmt = stmt.where(or_(message_hit, self._matches(S.title, "tsq_t"))).add_columns(first_doc.label("doc"))
        return stmt.params(tsq_m=expression, tsq_t=expression, tsq_d=expression)

    def decorate(self, expression: str, rows: list, docs: dict) -> None:
        S = ConversationSession
        query = func.to_tsquery(_CONFIG, bindparam("tsq", expression))
        wanted = [doc for doc in docs.values() if doc is not None]
        snippets = {}
        if wanted:
            snippets = dict(
                db.session.execute(
                    select(Message.id, func.ts_headline(_CONFIG, Message.content, query, _HEADLINE)).where(
                        Message.id.in_(wanted)
                    )
                ).all()
            )
        titles = dict(
            db.session.execute(
                select(S.id, func.ts_headline(_CONFIG, S.title, query, _HEADLINE + ", HighlightAll=true"))
                .where(S.id.in_([row.session.id for row in rows]))
                .where(func.to_tsvector(_CONFIG, S.title).op("@@")(query))
            ).all()
        )
        for row in rows:
            doc = docs.get(row.session.id)
            row.snippet_html = marked(snippets.get(doc)) if doc is not None else None
            row.title_html = marked(titles.get(row.session.id))


def rebuild_index(conn) -> None:
    """Rebuild the SQLite full-text index from messages and titles, then let FTS5 check it.

    The same layout as the triggers of migrations 0002 and 0003 (which keep their own frozen
    copy of these statements): k = user_id * USER_SPAN + n, rowid = k * SESSION_SPAN + n.
    'rebuild' reads the view search_message_source, which lists ended messages only.
    """
    for statement in (
        "DELETE FROM search_backlog",  # every document is indexed below
        "INSERT INTO search_messages (search_messages) VALUES ('delete-all')",
        "DELETE FROM search_titles",
        "DELETE FROM search_message_docs",
        "DELETE FROM search_session_docs",
        "INSERT INTO search_session_docs (doc_id, session_id) "
        f"SELECT user_id * {USER_SPAN} + row_number() OVER (PARTITION BY user_id ORDER BY created_at, id), id "
        f"FROM conversation_sessions WHERE user_id BETWEEN 0 AND {(1 << 21) - 1}",
        "INSERT INTO search_message_docs (doc_id, message_id) "
        f"SELECT s.doc_id * {SESSION_SPAN} + row_number() OVER (PARTITION BY m.session_id ORDER BY m.created_at, m.id), "
        "m.id FROM messages AS m JOIN search_session_docs AS s ON s.session_id = m.session_id",
        "INSERT INTO search_messages (search_messages) VALUES ('rebuild')",
        "INSERT INTO search_titles (rowid, title) SELECT d.doc_id, s.title "
        "FROM search_session_docs AS d JOIN conversation_sessions AS s ON s.id = d.session_id",
        "INSERT INTO search_messages (search_messages, rank) VALUES ('integrity-check', 1)",
        "INSERT INTO search_titles (search_titles, rank) VALUES ('integrity-check', 1)",
    ):
        conn.execute(text(statement))
