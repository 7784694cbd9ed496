"""`flask sessions import|purge|archive-idle|reindex` and `flask dev seed`."""

from __future__ import annotations

import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from ..errors import RequestError
from ..extensions import db
from ..models import User
from . import actions, importing

sessions_cli = AppGroup("sessions", help="Import, retention and search maintenance of chat sessions.")
dev_cli = AppGroup("dev", help="Development helpers (test data).")


def _user(username: str) -> User:
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}.")
    return user


@sessions_cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--user", "username", required=True, help="The user who will own the imported session.")
def import_command(file: Path, username: str) -> None:
    """Recreate a session from a JSON export, for USER, in one transaction."""
    user = _user(username)
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}.") from None
    limit = importing.import_limit()
    if size > limit:
        raise click.ClickException(
            f"{file} is {size / 1_048_576:.1f} MB; the import limit is {limit / 1_048_576:.1f} MB."
        )
    try:
        plan = importing.parse_import(file.read_bytes())
        session = importing.import_document(plan, user)
    except RequestError as exc:  # the input layer's refusals too, not only the import's own
        raise click.ClickException(exc.message) from None
    click.echo(
        f"Imported {file.name} as session {session.id} for {user.username}: "
        f"{len(plan['messages'])} messages, title {session.title!r}."
    )


@sessions_cli.command("purge")
@click.option(
    "--archived-older-than",
    "days",
    type=click.IntRange(min=0),
    required=True,
    metavar="DAYS",
    help="Delete sessions archived more than DAYS days ago.",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
def purge_command(days: int, dry_run: bool) -> None:
    """Delete archived sessions (with their messages, runs and search entries)."""
    report = actions.purge_archived(days, dry_run=dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(
        f"{verb} {report.sessions:,} archived session(s) and {report.messages:,} message(s) "
        f"archived before {report.cutoff:%Y-%m-%d %H:%M} UTC."
    )


@sessions_cli.command("archive-idle")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Idle days before archiving (default: the ARCHIVE_IDLE_DAYS setting).",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be archived.")
def archive_idle_command(days: int | None, dry_run: bool) -> None:
    """Archive active sessions with no activity for N days (ARCHIVE_IDLE_DAYS; 0 = off)."""
    days = days or current_app.config.get("ARCHIVE_IDLE_DAYS") or 0
    if not days:
        click.echo("ARCHIVE_IDLE_DAYS is 0 (off) and no --days given: nothing archived.")
        return
    report = actions.archive_idle(days, dry_run=dry_run)
    verb = "Would archive" if dry_run else "Archived"
    click.echo(
        f"{verb} {report.sessions:,} session(s) idle since before {report.cutoff:%Y-%m-%d %H:%M} UTC ({days} days)."
    )


@sessions_cli.command("reindex")
def reindex_command() -> None:
    """Rebuild the full-text index from the messages and titles and check it (SQLite)."""
    if db.engine.dialect.name != "sqlite":
        click.echo("PostgreSQL keeps its full-text indexes itself: nothing to do.")
        return
    from .search import rebuild_index

    started = time.monotonic()
    with db.engine.begin() as conn:
        rebuild_index(conn)
    click.echo(f"Rebuilt and checked the search index in {time.monotonic() - started:.1f} s.")


@dev_cli.command("seed")
@click.option("--sessions", "n_sessions", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--messages-per-session", "per_session", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--users",
    "n_users",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Spread sessions over this many seed users (seed-user-01, ...), skewed like real use.",
)
@click.option("--user", "username", default=None, help="Put every session on this existing user instead.")
@click.option("--random-seed", type=int, default=42, show_default=True)
def seed_command(n_sessions: int, per_session: int, n_users: int, username: str | None, random_seed: int) -> None:
    """Fill the database with realistic sessions, fast (bulk inserts in large transactions)."""
    from .seed import seed

    users = [_user(username)] if username else None
    started = time.monotonic()

    def progress(done: int, messages: int) -> None:
        elapsed = time.monotonic() - started
        click.echo(f"  {done:,} sessions, {messages:,} messages ({elapsed:.0f} s)")

    report = seed(n_sessions, per_session, n_users=n_users, users=users, random_seed=random_seed, progress=progress)
    click.echo(
        f"Seeded {report['sessions']:,} sessions and {report['messages']:,} messages for "
        f"{report['users']} user(s) in {time.monotonic() - started:.1f} s."
    )
