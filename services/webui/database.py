"""Database plumbing: SQLite pragmas on every connection and a clear failure when it cannot open."""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import config
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


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)  # mkdir's mode is cut by the umask, and the folder may be older


def secure_data_files(app) -> None:
    """Make the data folders 0700 and the SQLite file 0600 before SQLite opens it.

    SQLite gives the -wal and -shm files the mode of the database file, so a database created
    (or tightened) here keeps all three private, whatever the process umask. Only the folders the
    app owns are changed: a DATABASE_URL in a shared folder gets its files tightened, not the folder.
    """
    try:
        _private_dir(Path(app.instance_path))
        url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return
        if url.database.startswith("file:"):
            return  # a URI filename: SQLite parses it, we cannot tell the path for sure
        path = Path(url.database).resolve()
        if path.parent == Path(config.DEFAULT_DATA_DIR).resolve():
            _private_dir(path.parent)
        elif not path.parent.is_dir():
            return  # check_database says so in one sentence
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        except FileExistsError:
            pass
        for suffix in ("", "-wal", "-shm"):
            companion = Path(f"{path}{suffix}")
            if companion.exists() and companion.stat().st_mode & 0o077:
                os.chmod(companion, PRIVATE_FILE)
    except OSError as exc:
        raise ConfigError(f"The data files cannot be made private ({exc.filename}: {exc.strerror}).") from None


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
