"""Attention on PostgreSQL: the marks query (a join on a correlated subquery) and seen_at, through
the same routes as on SQLite (tests/webui/test_attention.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from .test_attention import add_session
from .test_sessions_postgres import pg_alice, pg_app, pg_server, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_marks_and_seen_on_postgresql(pg_app, pg_alice):  # noqa: F811
    running, _ = add_session(pg_app, "alice", status="planning", seen_ago=timedelta(0))
    waiting, _ = add_session(pg_app, "alice", status="awaiting_approval", seen_ago=timedelta(0))
    unseen, _ = add_session(pg_app, "alice", ended_ago=timedelta(minutes=1), seen_ago=timedelta(minutes=2))
    add_session(pg_app, "alice", ended_ago=timedelta(minutes=2), seen_ago=timedelta(minutes=1))
    body = pg_alice.get("/api/chat/attention").json
    assert {s["id"]: s["state"] for s in body["sessions"]} == {
        running: "running",
        waiting: "waiting",
        unseen: "unseen",
    }
    assert pg_alice.post(f"/api/chat/sessions/{unseen}/seen").status_code == 200
    assert pg_alice.get("/api/chat/attention").json["attention"] == 1
    html = pg_alice.get("/").text
    assert f'<li data-session-id="{running}">' in html and 'data-state="waiting"' in html
