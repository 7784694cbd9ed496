"""The sessions area on PostgreSQL: migrations both ways, full-text search (both plans), keyset
pages, export/import and delete, through the same routes as on SQLite.

Runs against a throw-away server (tests/postgres_server.py), or the one
SWITCHBOARD_TEST_POSTGRES_URL names; each run creates a database and drops it afterwards.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text

from services.webui import create_app
from services.webui.auth import create_user
from services.webui.extensions import db
from services.webui.models import utcnow
from services.webui.runs import run_manager
from services.webui.sessions import search

from ..postgres_server import postgres_server
from ..support import UserClient, base_config
from .test_input_contract import hostile_sweep
from .test_sessions import add_session, conversation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def pg_url(pg_server):
    server = pg_server
    name = f"switchboard_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_app(pg_url, tmp_path, agents_file):
    app = create_app({**base_config(tmp_path, tmp_path / "unused.db", agents_file), "SQLALCHEMY_DATABASE_URI": pg_url})
    with app.app_context():
        upgrade()
    yield app
    run_manager(app).shutdown(timeout=0.5)  # its housekeeping must not outlive the server
    with app.app_context():
        db.session.remove()
        for table in ("idempotency_keys", "runs", "messages", "conversation_sessions", "users"):
            db.session.execute(text(f"DELETE FROM {table}"))
        db.session.commit()
        db.engine.dispose()


@pytest.fixture
def pg_alice(pg_app):
    with pg_app.app_context():
        create_user("alice", "correct horse battery")
    return UserClient(pg_app, "alice", "correct horse battery")


@pytest.fixture(params=["hits", "probe"])
def plan(request, monkeypatch):
    monkeypatch.setattr(search, "COMMON_HITS", 10**9 if request.param == "hits" else 0)
    return request.param


def titles(client, **params):
    response = client.get("/api/chat/sessions", query_string=params)
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json["sessions"]]


def test_migrations_upgrade_and_downgrade_on_postgresql(pg_url, tmp_path, agents_file):
    app = create_app({**base_config(tmp_path, tmp_path / "unused.db", agents_file), "SQLALCHEMY_DATABASE_URI": pg_url})
    with app.app_context():
        upgrade()
        indexes = {ix["name"] for ix in inspect(db.engine).get_indexes("messages")}
        assert {"ix_messages_content_tsv", "ix_messages_session_role_created"} <= indexes
        downgrade(revision="0001")
        assert "ix_messages_content_tsv" not in {ix["name"] for ix in inspect(db.engine).get_indexes("messages")}
        upgrade()
        db.engine.dispose()


def test_search_on_postgresql(pg_app, pg_alice, plan):
    reply = add_session(pg_app, "alice", title="Weekly sync", messages=conversation("what next?", "Nothing yet."))
    add_session(pg_app, "alice", title="Café opening hours", messages=conversation("hi", "hello"))
    add_session(pg_app, "alice", title="Escapes", messages=conversation("show", "<b>quokka</b> & friends"))
    with pg_app.app_context():
        from services.webui.models import Message, new_id

        db.session.add(
            Message(
                id=new_id(),
                session_id=reply,
                role="assistant",
                status="complete",
                content="The ptarmigan migration is done.",
                created_at=utcnow(),
            )
        )
        db.session.commit()
    body = pg_alice.get("/api/chat/sessions", query_string={"q": "ptarmigan"}).json
    assert [s["id"] for s in body["sessions"]] == [reply]
    assert "<mark>ptarmigan</mark>" in body["sessions"][0]["snippet_html"]
    assert titles(pg_alice, q="ptarm") == ["Weekly sync"]
    assert titles(pg_alice, q="opening hours") == ["Café opening hours"]
    marked = pg_alice.get("/api/chat/sessions", query_string={"q": "quokka"}).json["sessions"][0]["snippet_html"]
    # (PostgreSQL's parser drops what looks like a tag from headlines; what is left is escaped.)
    assert "<mark>quokka</mark>" in marked and "<b>" not in marked and "&amp; friends" in marked
    assert titles(pg_alice, q="nowhere to be found") == []
    for query in ('"', "a & b | !c", "x:*", "'; DROP TABLE messages; --"):
        assert pg_alice.get("/api/chat/sessions", query_string={"q": query}).status_code == 200


def test_pages_filters_transfer_and_delete_on_postgresql(pg_app, pg_alice):
    base = utcnow() - timedelta(days=2)
    for n in range(7):
        add_session(
            pg_app,
            "alice",
            title=f"S{n}",
            messages=conversation(status="cancelled" if n == 3 else "complete"),
            created_at=base + timedelta(minutes=n),
        )
    seen, cursor = [], None
    while True:
        body = pg_alice.get(
            "/api/chat/sessions", query_string={"limit": 3, **({"cursor": cursor} if cursor else {})}
        ).json
        seen += [s["title"] for s in body["sessions"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [f"S{n}" for n in reversed(range(7))]
    assert titles(pg_alice, status="cancelled") == ["S3"]
    session_id = pg_alice.get("/api/chat/sessions", query_string={"q": "s3"}).json["sessions"][0]["id"]
    exported = pg_alice.get(f"/api/chat/sessions/{session_id}/export").json
    imported = pg_alice.post("/api/chat/sessions/import", json=exported)
    assert imported.status_code == 201
    again = pg_alice.get(f"/api/chat/sessions/{imported.json['session_id']}/export").json
    strip = lambda d: [{k: v for k, v in m.items() if k not in ("id", "parent_id")} for m in d["messages"]]  # noqa: E731
    assert strip(again) == strip(exported) and again["totals"] == exported["totals"]
    # The tree comes back with new ids: each parent is the message before it (one path).
    assert [m["parent_id"] for m in again["messages"][1:]] == [m["id"] for m in again["messages"][:-1]]
    assert pg_alice.get(f"/sessions/{session_id}").status_code == 200
    assert pg_alice.delete(f"/api/chat/sessions/{session_id}").status_code == 200
    with pg_app.app_context():
        assert (
            db.session.execute(text("SELECT count(*) FROM messages WHERE session_id = :s"), {"s": session_id}).scalar()
            == 0
        )


def test_text_postgresql_cannot_store_is_refused_and_no_route_answers_500(pg_app, pg_alice):
    session_id = add_session(pg_app, "alice", title="Before")
    response = pg_alice.patch(f"/api/chat/sessions/{session_id}", json={"title": "a\x00b"})
    assert response.status_code == 400 and "NUL" in response.json["message"]
    sent = pg_alice.post("/api/chat/message", json={"agent_id": "architect", "content": "a\x00b"})
    assert sent.status_code == 400
    assert pg_alice.get(f"/api/chat/sessions/{session_id}").json["session"]["title"] == "Before"
    assert hostile_sweep(pg_app, pg_alice) >= 500
