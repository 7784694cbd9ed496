"""Database plumbing: SQLite pragmas on every connection and a clear failure when it cannot open."""
from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .config import ConfigError
from .extensions import db

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    # Safe with WAL: a crash can lose the last commits but never corrupts the file.
    "PRAGMA synchronous=NORMAL",
)


@event.listens_for(Engine, "connect")
def _set_sqlite_pragmas(dbapi_connection, connection_record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()


# One writer at a time per process, waited for in Python. Without it, a greenlet that yields while
# holding SQLite's write lock leaves the next writer spinning in SQLite's C busy handler, which
# blocks the whole gevent hub (the holder can never resume) until busy_timeout expires. Under
# gevent this lock is cooperative; across processes SQLite's own busy_timeout still applies.
_sqlite_write_lock = threading.RLock()
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_HOLDS_LOCK = "switchboard_holds_write_lock"


@event.listens_for(Engine, "before_cursor_execute")
def _take_sqlite_write_lock(conn, cursor, statement, parameters, context, executemany) -> None:
    if conn.dialect.name != "sqlite" or conn.info.get(_HOLDS_LOCK):
        return
    if statement.lstrip()[:7].upper().startswith(_WRITE_VERBS):
        _sqlite_write_lock.acquire()
        conn.info[_HOLDS_LOCK] = True


@event.listens_for(Engine, "commit")
@event.listens_for(Engine, "rollback")
def _release_sqlite_write_lock(conn) -> None:
    if conn.info.pop(_HOLDS_LOCK, False):
        _sqlite_write_lock.release()


def check_database(app) -> None:
    """Open one connection now, so that a bad DATABASE_URL stops start-up with one sentence."""
    with app.app_context():
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).splitlines()[0]
            where = db.engine.url.render_as_string(hide_password=True)
            raise ConfigError(f"DATABASE_URL: cannot open the database at {where} ({reason}).") from None


def database_reachable() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        db.session.rollback()
        return False


def include_in_autogenerate(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic autogenerate filter: leave alone the full-text search objects of migration 0002.

    They are made by raw DDL (FTS5 tables and their shadow tables, a view, expression indexes on
    PostgreSQL) that the models do not describe, so autogenerate would otherwise drop them.
    """
    if reflected and compare_to is None and name and (name.startswith("search_") or name.endswith("_tsv")):
        return False
    return True
