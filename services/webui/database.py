"""Database plumbing: SQLite pragmas on every connection and a clear failure when it cannot open."""
from __future__ import annotations

import sqlite3

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
