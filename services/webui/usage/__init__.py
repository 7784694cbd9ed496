"""Usage: what replies cost, by day, agent, model and user (`/usage`, `/usage.csv`, `/api/usage`)."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from ..runs.store import Offloader

EXTENSION = "switchboard.usage"


class UsageReader:
    """Runs the usage GROUP BY off the serving thread: a user with 100k replies takes a noticeable
    fraction of a second to add up, which on a gevent worker would stall every stream. One native
    thread (gevent's threadpool; inline without gevent) with an engine of its own, as the run store
    does; NullPool, so no pool lock is ever shared between the hub and that thread."""

    def __init__(self, database_url: str):
        self.offload = Offloader()
        self.engine = create_engine(database_url, poolclass=NullPool)

    def rows(self, statement) -> list:
        return self.offload(self._read, statement)

    def _read(self, statement) -> list:
        with self.engine.connect() as conn:
            return conn.execute(statement).all()


def usage_reader(app=None) -> UsageReader:
    if app is None:
        from flask import current_app

        app = current_app
    return app.extensions[EXTENSION]


def init_usage(app) -> None:
    from . import pages

    app.extensions[EXTENSION] = UsageReader(app.config["SQLALCHEMY_DATABASE_URI"])
    app.register_blueprint(pages.bp)
