"""The usage overview and the session's running total on PostgreSQL (the same routes as on SQLite):
day grouping, numeric sums and the CSV, against a throw-away server (tests/postgres_server.py)."""

from __future__ import annotations

import csv
import io

import pytest

from .test_sessions import add_session
from .test_sessions_postgres import pg_alice, pg_app, pg_server, pg_url  # noqa: F401 (fixtures)
from .test_usage import noon, turn, usage

pytestmark = pytest.mark.slow


def test_usage_and_running_total_on_postgresql(pg_app, pg_alice):  # noqa: F811
    session_id = add_session(
        pg_app,
        "alice",
        created_at=noon(2),
        messages=turn(usage(100, 10, 0.5)) + turn(usage(200, 20, 0.25), model_id="ref-fast"),
    )
    body = pg_alice.get("/api/usage").json
    assert body["total"] == {"replies": 2, "prompt_tokens": 300, "completion_tokens": 30, "cost_usd": 0.75}
    assert [row["key"] for row in body["by_day"]] == [noon(2).date().isoformat()]
    assert {row["key"] for row in body["by_model"]} == {"ref-standard", "ref-fast"}
    rows = list(csv.reader(io.StringIO(pg_alice.get("/usage.csv").text)))
    assert len(rows) == 3 and rows[1][0] == noon(2).date().isoformat()
    page = pg_alice.get(f"/chat/{session_id}").text
    assert "300 in · 30 out · $0.75" in page
