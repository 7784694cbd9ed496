"""Retention (`flask sessions purge`, `archive-idle`), `flask dev seed`, `flask sessions reindex`,
and the search migration on a database that already holds messages."""

from __future__ import annotations

from datetime import timedelta

from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text

from services.webui import create_app
from services.webui.extensions import db
from services.webui.models import ConversationSession, Message, Run, User, utcnow
from services.webui.sessions.search import index_queued

from ..support import base_config
from .test_sessions import add_session, conversation, count, fts_integrity, get_session, titles


def test_purge_removes_only_sessions_archived_before_the_cutoff(app, runner, alice):
    now = utcnow()
    old = add_session(
        app,
        "alice",
        title="Old archived obsidian",
        messages=conversation("q", "obsidian"),
        created_at=now - timedelta(days=200),
        archived_at=now - timedelta(days=100),
    )
    recent = add_session(
        app,
        "alice",
        title="Recently archived",
        messages=conversation(),
        created_at=now - timedelta(days=200),
        archived_at=now - timedelta(days=10),
    )
    active = add_session(
        app, "alice", title="Old but active", messages=conversation(), created_at=now - timedelta(days=400)
    )
    dry = runner.invoke(args=["sessions", "purge", "--archived-older-than", "30", "--dry-run"])
    assert dry.exit_code == 0 and "Would delete 1 archived session(s) and 2 message(s)" in dry.output
    assert count(app, ConversationSession) == 3
    result = runner.invoke(args=["sessions", "purge", "--archived-older-than", "30"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 archived session(s) and 2 message(s) archived before" in result.output
    assert get_session(app, old) is None
    assert get_session(app, recent) is not None and get_session(app, active) is not None
    assert count(app, Message) == 4 and count(app, Run) == 2
    assert titles(alice, q="obsidian") == []
    fts_integrity(app)
    again = runner.invoke(args=["sessions", "purge", "--archived-older-than", "30"])
    assert "Deleted 0 archived session(s)" in again.output
    assert runner.invoke(args=["sessions", "purge"]).exit_code != 0  # the age is required
    assert runner.invoke(args=["sessions", "purge", "--archived-older-than", "-1"]).exit_code != 0


def test_archive_idle_follows_the_setting_and_reports(app, runner, alice):
    now = utcnow()
    idle = add_session(app, "alice", title="Idle", created_at=now - timedelta(days=50))
    fresh = add_session(
        app, "alice", title="Fresh", created_at=now - timedelta(days=50), updated_at=now - timedelta(days=2)
    )
    busy = add_session(app, "alice", title="Busy", created_at=now - timedelta(days=50), active_run_id="x" * 36)
    app.config["ARCHIVE_IDLE_DAYS"] = 0
    off = runner.invoke(args=["sessions", "archive-idle"])
    assert off.exit_code == 0 and "nothing archived" in off.output
    app.config["ARCHIVE_IDLE_DAYS"] = 30
    dry = runner.invoke(args=["sessions", "archive-idle", "--dry-run"])
    assert "Would archive 1 session(s)" in dry.output and get_session(app, idle).archived_at is None
    result = runner.invoke(args=["sessions", "archive-idle"])
    assert (
        result.exit_code == 0
        and "Archived 1 session(s) idle since before" in result.output
        and "(30 days)" in result.output
    )
    assert get_session(app, idle).archived_at is not None
    assert get_session(app, fresh).archived_at is None and get_session(app, busy).archived_at is None
    override = runner.invoke(args=["sessions", "archive-idle", "--days", "1"])
    assert "Archived 1 session(s)" in override.output and get_session(app, fresh).archived_at is not None


def test_dev_seed_makes_realistic_searchable_data(app, runner):
    result = runner.invoke(args=["dev", "seed", "--sessions", "60", "--messages-per-session", "6", "--users", "4"])
    assert result.exit_code == 0, result.output
    assert "Seeded 60 sessions and 360 messages for 4 user(s)" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User).where(User.username.like("seed-user-%"))) == 4
        per_user = db.session.execute(
            select(ConversationSession.user_id, func.count()).group_by(ConversationSession.user_id)
        ).all()
        assert len(per_user) >= 2
        statuses = set(db.session.scalars(select(Message.status).where(Message.role == "assistant")))
        assert "complete" in statuses
        assert db.session.scalar(select(func.count()).select_from(Run)) == 180
        assert db.session.scalar(select(func.max(ConversationSession.updated_at))) <= utcnow()
        first = db.session.scalar(select(ConversationSession).limit(1))
        opener = db.session.scalar(
            select(Message.content).where(Message.session_id == first.id).order_by(Message.created_at).limit(1)
        )
        assert opener.startswith(first.title.rstrip("…"))
        about = db.session.execute(text("SELECT count(*) FROM search_messages WHERE search_messages MATCH 'about'"))
        assert about.scalar() > 300  # every question and every whole reply says "About ..."
    fts_integrity(app)
    assert runner.invoke(args=["sessions", "reindex"]).exit_code == 0
    fts_integrity(app)


def test_reindex_repairs_a_lost_search_index(app, runner, alice):
    add_session(app, "alice", title="Juniper notes", messages=conversation("q", "juniper berries"))
    with app.app_context(), db.engine.begin() as conn:
        assert index_queued(conn) == 3  # the title and both messages, indexed and then lost
        conn.execute(text("INSERT INTO search_messages (search_messages) VALUES ('delete-all')"))
        conn.execute(text("DELETE FROM search_titles"))
    assert titles(alice, q="juniper") == []
    result = runner.invoke(args=["sessions", "reindex"])
    assert result.exit_code == 0 and "Rebuilt and checked the search index" in result.output
    assert titles(alice, q="juniper") == ["Juniper notes"]
    fts_integrity(app)


def test_the_search_migration_indexes_existing_messages_and_reverses(tmp_path, agents_file):
    app = create_app(base_config(tmp_path, tmp_path / "pre.db", agents_file))
    with app.app_context():
        upgrade(revision="0001")
        db.session.execute(
            text(
                "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'old', 'x', 'user', :t)"
            ),
            {"t": utcnow()},
        )
        db.session.execute(
            text(
                "INSERT INTO conversation_sessions (id, user_id, agent_id, agent_name, parent_role, model_id, title,"
                " created_at, updated_at) VALUES ('s1', 1, 'architect', 'Architect', '', 'ref-standard',"
                " 'Vellum archive', :t, :t)"
            ),
            {"t": utcnow()},
        )
        db.session.execute(
            text(
                "INSERT INTO messages (id, session_id, role, message_type, content, status, created_at)"
                " VALUES ('m1', 's1', 'assistant', 'chat', 'a wolfram filament', 'complete', :t)"
            ),
            {"t": utcnow()},
        )
        db.session.commit()
        upgrade()
        hits = lambda table, word: db.session.execute(  # noqa: E731
            text(f"SELECT count(*) FROM {table} WHERE {table} MATCH :w"), {"w": word}
        ).scalar()
        assert hits("search_messages", "wolfram") == 1 and hits("search_titles", "vellum") == 1
        db.session.commit()
        downgrade(revision="0001")
        names = set(db.session.execute(text("SELECT name FROM sqlite_master")).scalars())
        assert not {n for n in names if n.startswith("search_")}
        assert "ix_sessions_user_updated_id" not in names
        assert db.session.execute(text("SELECT content FROM messages")).scalar() == "a wolfram filament"
        upgrade()
        assert hits("search_messages", "wolfram") == 1
        db.engine.dispose()
