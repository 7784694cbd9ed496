"""Database plumbing: SQLite pragmas on every connection, writers that never hold the serving
thread while they wait, and a clear failure when the database cannot open or cannot write."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import config
from .config import ConfigError
from .errors import RequestError
from .extensions import db

# A WAL reader meets a lock only in rare moments (a checkpoint resetting the log): it may wait
# this long in SQLite's C handler. A writer never does (begin_immediate).
READ_BUSY_TIMEOUT_MS = 20
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    # The serving thread waits in SQLite's C busy handler only a moment: under gevent that wait
    # holds every stream of the worker. Waits for the write lock happen in Python
    # (begin_immediate), where they yield; the run store's own connections, on a native thread,
    # wait longer.
    f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}",
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
# gevent this lock is cooperative. Across processes, the write lock is then taken with BEGIN
# IMMEDIATE, retried with sleeps that yield, for at most WRITE_WAIT_SECONDS.
_sqlite_write_lock = threading.RLock()
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_DML_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_HOLDS_LOCK = "switchboard_holds_write_lock"
WRITE_WAIT_SECONDS = 5.0  # the default of DATABASE_WRITE_WAIT_SECONDS
WRITE_WAIT_OPTION = "switchboard_write_wait"
RETRY_AFTER_SECONDS = 5
BUSY_MESSAGE = "The database is busy right now, so nothing was saved. Try again in a few seconds."
FULL_MESSAGE = "The database cannot store anything right now (its disk is full), so nothing was saved."


class DatabaseUnavailable(RequestError):
    """The database cannot take a write now: 503 with a sentence and Retry-After."""

    def __init__(self, message: str = BUSY_MESSAGE):
        super().__init__(503, message)
        self.retry_after = RETRY_AFTER_SECONDS


def _lock_errors(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def begin_immediate(dbapi_connection, wait_seconds: float | None = None) -> None:
    """Take SQLite's write lock now, waiting cooperatively; DatabaseUnavailable past the wait."""
    if dbapi_connection.in_transaction:
        return
    deadline = time.monotonic() + (WRITE_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    delay = 0.002
    # No wait in SQLite's C busy handler here: the run store's writer (runs/store.py) holds the
    # lock often while replies stream, and each BEGIN that met it slept up to the busy timeout
    # with the whole worker. In bench/load.py (a), while its 500 sends came in, half of the
    # worker's busy samples were a send saving its turn, mostly in that wait. These sleeps yield.
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _lock_errors(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise DatabaseUnavailable() from None
            time.sleep(delay)  # yields under gevent
            delay = min(delay * 2, 0.05)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")


@event.listens_for(Engine, "before_cursor_execute")
def _take_sqlite_write_lock(conn, cursor, statement, parameters, context, executemany) -> None:
    if conn.dialect.name != "sqlite" or conn.info.get(_HOLDS_LOCK):
        return
    if conn.get_execution_options().get("switchboard_store"):
        return  # the run store writes on a native thread of its own (runs/store.py)
    verb = statement.lstrip()[:7].upper()
    if verb.startswith(_WRITE_VERBS):
        _sqlite_write_lock.acquire()
        conn.info[_HOLDS_LOCK] = True
        if verb.startswith(_DML_VERBS):
            begin_immediate(conn.connection.dbapi_connection, conn.get_execution_options().get(WRITE_WAIT_OPTION))


@event.listens_for(Engine, "commit")
@event.listens_for(Engine, "rollback")
def _release_sqlite_write_lock(conn) -> None:
    if conn.info.pop(_HOLDS_LOCK, False):
        _sqlite_write_lock.release()


def unavailable_from(exc: BaseException) -> DatabaseUnavailable | None:
    """The DatabaseUnavailable behind a database error, if it is one (locked, busy, full)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, DatabaseUnavailable):
            return seen
        if isinstance(seen, sqlite3.OperationalError):
            text = str(seen).lower()
            if "full" in text:
                return DatabaseUnavailable(FULL_MESSAGE)
            if _lock_errors(seen):
                return DatabaseUnavailable()
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None


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
        db.engine.update_execution_options(**{WRITE_WAIT_OPTION: app.config["DATABASE_WRITE_WAIT_SECONDS"]})
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


def database_writable(wait_seconds: float = 0.5) -> bool:
    """Can a write start now? SQLite: take and give back the write lock (cooperatively)."""
    try:
        with db.engine.connect() as connection:
            if connection.dialect.name != "sqlite":
                return True
            dbapi_connection = connection.connection.dbapi_connection
            begin_immediate(dbapi_connection, wait_seconds)
            dbapi_connection.execute("ROLLBACK")
            return True
    except (SQLAlchemyError, DatabaseUnavailable, sqlite3.Error):
        return False


def include_in_autogenerate(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic autogenerate filter: leave alone the full-text search objects of migration 0002.

    They are made by raw DDL (FTS5 tables and their shadow tables, a view, expression indexes on
    PostgreSQL) that the models do not describe, so autogenerate would otherwise drop them.
    """
    if reflected and compare_to is None and name and (name.startswith("search_") or name.endswith("_tsv")):
        return False
    return True
