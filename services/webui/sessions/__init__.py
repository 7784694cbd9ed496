"""Sessions: history, archive, search, read-only review, export/import, retention, seeding.

`init_sessions(app)` registers the page and API blueprints and the `flask sessions` / `flask dev`
command groups. Everything session-scoped goes through `ownership.owned_session`, so a foreign or
unknown id is a 404, and admins may read (never change) other users' sessions.
"""

from __future__ import annotations


def init_sessions(app) -> None:
    from . import api, cli, pages

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.cli.add_command(cli.sessions_cli)
    app.cli.add_command(cli.dev_cli)
