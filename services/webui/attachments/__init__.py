"""Attachments: files (text, PDF, images) a user hands an agent with a message.

`init_attachments(app)` registers the routes (routes.py), the `flask attachments` commands and
the template helper that lists a message's attachments. Storage is storage.py, what a file is
validation.py, the rules service.py, and what the agent receives parts.py.
"""

from __future__ import annotations

import click
from flask import g
from flask.cli import AppGroup


def message_attachments(message_id: str) -> list:
    """For templates: a message's attachments (cached for the request)."""
    from . import service

    cache = g.setdefault("message_attachments", {})
    if message_id not in cache:
        cache.update(service.by_message([message_id]))
        cache.setdefault(message_id, [])
    return cache[message_id]


def prefetch_attachments(message_ids) -> str:
    """For templates listing many messages: load all their attachments in one query, up front."""
    from . import service

    ids = [message_id for message_id in message_ids if message_id]
    cache = g.setdefault("message_attachments", {})
    cache.update(service.by_message(ids))
    for message_id in ids:
        cache.setdefault(message_id, [])
    return ""


attachments_cli = AppGroup("attachments", help="Attachment housekeeping.")


@attachments_cli.command("cleanup")
def cleanup_command() -> None:
    """Remove unsent uploads older than a day, blobs no attachment names, and stale temp files."""
    from . import service

    report = service.cleanup()
    click.echo(
        f"Removed {report['unsent_rows']} unsent upload(s), {report['blobs']} blob file(s) "
        f"and {report['temp_files']} temp file(s)."
    )


def init_attachments(app) -> None:
    from . import routes

    app.register_blueprint(routes.bp)
    app.cli.add_command(attachments_cli)
    app.jinja_env.globals["message_attachments"] = message_attachments
    app.jinja_env.globals["prefetch_attachments"] = prefetch_attachments
    app.jinja_env.filters["filesize"] = filesize


def filesize(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1_048_576:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1_048_576:.1f} MB"
