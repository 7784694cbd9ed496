"""Usage: what replies cost, by day, agent, model and user (`/usage`, `/usage.csv`, `/api/usage`)."""

from __future__ import annotations


def init_usage(app) -> None:
    from . import pages

    app.register_blueprint(pages.bp)
