"""Cost: the usage overview (page, CSV, API), the chat's running total, the model of each reply,
and a reply that never reached its agent costing nothing."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text

from services.webui.extensions import db
from services.webui.models import Message, utcnow

from .test_chat_api import send, wait_final
from .test_sessions import add_session


def usage(usage_prompt: int, usage_completion: int, cost: float) -> dict:
    return {
        "prompt_tokens": usage_prompt,
        "completion_tokens": usage_completion,
        "total_tokens": usage_prompt + usage_completion,
        "cost_usd": cost,
    }


def turn(reply_usage: dict | None, model_id: str | None = None, **extra) -> list[dict]:
    reply = {"role": "assistant", "content": "An answer.", "usage": reply_usage, **extra}
    if model_id is not None:
        reply["model_id"] = model_id
    return [{"role": "user", "content": "A question?"}, reply]


def noon(days_ago: int) -> datetime:
    return (utcnow() - timedelta(days=days_ago)).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def known(app, alice, bob):
    """Alice: two days, two agents, two models (one changes within a session); Bob: one reply.

    Every message of a session lies within seconds of its start, so on the start's day.
    """
    add_session(
        app,
        "alice",
        agent_id="architect",
        model_id="ref-standard",
        created_at=noon(3),
        messages=turn(usage(100, 10, 0.5)) + turn(usage(200, 20, 0.25), model_id="ref-fast"),
    )
    add_session(
        app,
        "alice",
        agent_id="dir-code",
        model_id="ref-fast",
        created_at=noon(1),
        messages=turn(usage(1000, 100, 1.0)) + turn(None, status="error"),
    )
    add_session(app, "bob", agent_id="architect", created_at=noon(1), messages=turn(usage(7, 3, 0.125)))
    return {"day3": noon(3).date().isoformat(), "day1": noon(1).date().isoformat()}


def api(client, **params):
    response = client.get("/api/usage", query_string=params)
    assert response.status_code == 200, response.text
    return response.json


def by_key(rows) -> dict:
    return {row["key"]: {k: v for k, v in row.items() if k != "key"} for row in rows}


# ---- the totals ---------------------------------------------------------------------------------


def test_totals_by_day_agent_and_model_are_right(alice, known):
    body = api(alice)
    assert body["user"] == "alice"
    assert body["total"] == {"replies": 4, "prompt_tokens": 1300, "completion_tokens": 130, "cost_usd": 1.75}
    assert by_key(body["by_day"]) == {
        known["day3"]: {"replies": 2, "prompt_tokens": 300, "completion_tokens": 30, "cost_usd": 0.75},
        known["day1"]: {"replies": 2, "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": 1.0},
    }
    assert [row["key"] for row in body["by_day"]] == [known["day1"], known["day3"]]  # newest first
    assert by_key(body["by_agent"]) == {
        "dir-code": {"replies": 2, "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": 1.0},
        "architect": {"replies": 2, "prompt_tokens": 300, "completion_tokens": 30, "cost_usd": 0.75},
    }
    # The model is the reply's own, not the session's: the first session switched to ref-fast.
    assert by_key(body["by_model"]) == {
        "ref-fast": {"replies": 3, "prompt_tokens": 1200, "completion_tokens": 120, "cost_usd": 1.25},
        "ref-standard": {"replies": 1, "prompt_tokens": 100, "completion_tokens": 10, "cost_usd": 0.5},
    }
    assert body["by_user"] == []


def test_the_date_range_is_in_utc_days_and_inclusive(alice, known):
    only_day1 = api(alice, **{"from": known["day1"], "to": known["day1"]})
    assert [row["key"] for row in only_day1["by_day"]] == [known["day1"]]
    assert only_day1["total"]["replies"] == 2
    # The default range is the last 30 days, today included.
    body = api(alice)
    assert body["to"] == utcnow().date().isoformat()
    assert body["from"] == (utcnow().date() - timedelta(days=29)).isoformat()
    assert api(alice, **{"from": "2000-01-01", "to": "2000-01-31"})["total"]["replies"] == 0


def test_a_user_sees_only_their_own(alice, bob, known):
    assert api(bob)["total"] == {"replies": 1, "prompt_tokens": 7, "completion_tokens": 3, "cost_usd": 0.125}
    assert api(bob, user="bob")["total"]["replies"] == 1
    for params in ({"user": "alice"}, {"user": "all"}):
        response = bob.get("/api/usage", query_string=params)
        assert response.status_code == 403 and "admin" in response.json["message"]
        assert bob.get("/usage.csv", query_string=params).status_code == 403
    page = bob.get("/usage")
    assert page.status_code == 200 and "alice" not in page.text


def test_an_admin_sees_everyone_with_a_per_user_breakdown_and_a_user_filter(make_user, known):
    admin = make_user("root", role="admin")
    body = api(admin)
    assert body["user"] == "all" and body["total"]["replies"] == 5
    assert body["total"]["cost_usd"] == 1.875
    assert by_key(body["by_user"]) == {
        "alice": {"replies": 4, "prompt_tokens": 1300, "completion_tokens": 130, "cost_usd": 1.75},
        "bob": {"replies": 1, "prompt_tokens": 7, "completion_tokens": 3, "cost_usd": 0.125},
    }
    assert api(admin, user="bob")["total"]["replies"] == 1 and api(admin, user="bob")["by_user"] == []
    missing = admin.get("/api/usage?user=nobody")
    assert missing.status_code == 400 and "nobody" in missing.json["message"]
    page = admin.get("/usage")
    assert page.status_code == 200
    assert "By user" in page.text and '<option value="bob"' in page.text


def test_the_page_shows_the_totals_and_links_the_csv(alice, known):
    page = alice.get("/usage")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'id="usage-total-cost">\$1\.75<', html)
    assert "By agent" in html and "By model" in html and "By day" in html and "By user" not in html
    assert "Architect <code>architect</code>" in html
    assert known["day1"] in html and known["day3"] in html
    assert re.search(r'href="/usage\.csv\?from=[0-9-]+&amp;to=[0-9-]+&amp;user=alice"', html)
    assert 'href="/usage"' in alice.get("/").text  # in the top navigation


# ---- the CSV ------------------------------------------------------------------------------------


def test_csv_has_a_header_the_rows_and_a_safe_type(alice, known):
    response = alice.get("/usage.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="switchboard-usage-alice-')
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "day",
        "user",
        "agent_id",
        "model_id",
        "replies",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
    ]
    assert rows[1:] == [
        [known["day3"], "alice", "architect", "ref-fast", "1", "200", "20", "0.250000"],
        [known["day3"], "alice", "architect", "ref-standard", "1", "100", "10", "0.500000"],
        [known["day1"], "alice", "dir-code", "ref-fast", "2", "1000", "100", "1.000000"],
    ]


def test_csv_cells_cannot_run_as_formulas(app, alice):
    for model_id in ('=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)"):
        add_session(app, "alice", created_at=noon(2), messages=turn(usage(1, 1, 0.0), model_id=model_id))
    rows = list(csv.reader(io.StringIO(alice.get("/usage.csv").text)))[1:]
    models = sorted(row[3] for row in rows)
    assert models == sorted(['\'=HYPERLINK("http://x")', "'+1", "'-2", "'@SUM(A1)"])
    assert all(not row[3].startswith(("=", "+", "-", "@")) for row in rows)


# ---- bad filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, words",
    [
        ({"from": "yesterday"}, "from must be a date"),
        ({"to": "2026-02-30"}, "to must be a date"),
        ({"from": "2026-03-01", "to": "2026-02-01"}, "on or before"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "at most"),
        ({"from": "2026-01-01T10:00:00"}, "without a time"),
        ({"to": "0001-01-01"}, "between 1970-01-01"),
    ],
)
def test_bad_filters_are_a_400_with_a_sentence(alice, params, words):
    response = alice.get("/api/usage", query_string=params)
    assert response.status_code == 400 and words in response.json["message"], response.text
    assert alice.get("/usage.csv", query_string=params).status_code == 400
    page = alice.get("/usage", query_string=params)
    assert page.status_code == 400 and words in page.text


# ---- a reply that never reached its agent -------------------------------------------------------


def test_a_reply_whose_agent_is_down_costs_nothing(app, alice):
    sent = send(alice, content="A long question " * 200, model_id="ref-standard").json  # nobody listens
    reply = wait_final(app, sent["message_id"])
    assert reply.status == "error" and "not answering" in reply.error
    assert reply.usage["reached_agent"] is False
    assert reply.usage["prompt_tokens"] == 0 and reply.usage["cost_usd"] == 0
    assert (reply.prompt_tokens, reply.completion_tokens, reply.cost_usd) == (0, 0, 0.0)
    assert reply.model_id == "ref-standard"
    body = api(alice)
    assert body["total"] == {"replies": 1, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    page = alice.get(f"/chat/{sent['session_id']}").text
    assert "Never reached the agent · no charge" in page
    assert re.search(r'class="session-cost-value">0 in · 0 out · \$0\.0000<', page)


# ---- the model of each reply, and the running total ------------------------------------------------


def test_each_reply_records_its_model_when_the_model_changes_within_a_session(app, alice):
    first = send(alice, model_id="ref-fast").json
    wait_final(app, first["message_id"])
    second = send(alice, model_id="ref-standard", session_id=first["session_id"]).json
    wait_final(app, second["message_id"])
    with app.app_context():
        models = db.session.execute(
            select(Message.role, Message.model_id)
            .where(Message.session_id == first["session_id"])
            .order_by(Message.created_at)
        ).all()
    assert [tuple(row) for row in models] == [
        ("user", None),
        ("assistant", "ref-fast"),
        ("user", None),
        ("assistant", "ref-standard"),
    ]
    page = alice.get(f"/chat/{first['session_id']}").text
    assert page.count('class="turn-model"') == 2
    assert "· ref-fast</span>" in page and "· ref-standard</span>" in page


def test_model_per_reply_in_review_and_markdown_export(app, alice):
    session_id = add_session(
        app,
        "alice",
        model_id="ref-standard",
        messages=turn(usage(1, 1, 0.1)) + turn(usage(1, 1, 0.1), model_id="gone-model"),
    )
    review = alice.get(f"/sessions/{session_id}").text
    assert review.count('class="transcript-model"') == 2
    assert ">ref-standard</span>" in review and ">gone-model</span>" in review  # unknown: its id
    markdown = alice.get(f"/sessions/{session_id}/export.md").text
    headings = [line for line in markdown.splitlines() if line.startswith("## Assistant")]
    assert len(headings) == 2
    assert headings[0].startswith("## Assistant (architect) · ref-standard · ")
    assert headings[1].startswith("## Assistant (architect) · gone-model · ")
    document = json.loads(alice.get(f"/sessions/{session_id}/export.json").text)
    assert [m["model_id"] for m in document["messages"]] == [None, "ref-standard", None, "gone-model"]


def test_import_restores_the_model_and_fills_it_for_older_exports(app, alice):
    session_id = add_session(app, "alice", messages=turn(usage(5, 6, 0.5), model_id="ref-fast"))
    document = json.loads(alice.get(f"/sessions/{session_id}/export.json").text)
    again = alice.post("/api/chat/sessions/import", json=document)
    assert again.status_code == 201, again.text
    second = json.loads(alice.get(f"/sessions/{again.json['session_id']}/export.json").text)
    assert [m["model_id"] for m in second["messages"]] == [None, "ref-fast"]
    # An export from before replies recorded their model: the run's model is taken.
    for message in document["messages"]:
        message.pop("model_id")
    older = alice.post("/api/chat/sessions/import", json=document)
    assert older.status_code == 201, older.text
    with app.app_context():
        reply = db.session.scalar(
            select(Message).where(Message.session_id == older.json["session_id"], Message.role == "assistant")
        )
        assert reply.model_id == "ref-standard"  # add_session's run model
        assert (reply.prompt_tokens, reply.completion_tokens, reply.cost_usd) == (5, 6, 0.5)
    # Only replies are written by a model.
    document["messages"][0]["model_id"] = "ref-fast"
    refused = alice.post("/api/chat/sessions/import", json=document)
    assert refused.status_code == 422 and "model_id" in refused.json["message"]


def test_the_chat_header_shows_the_sessions_running_total(app, alice):
    session_id = add_session(
        app,
        "alice",
        messages=turn(usage(1200, 34, 0.0123)) + turn(usage(34, 533, 0.5)) + turn(None, status="error"),
    )
    page = alice.get(f"/chat/{session_id}").text
    assert re.search(r'id="session-cost"', page)
    assert re.search(r'class="session-cost-value">1,234 in · 567 out · \$0\.51<', page)
    assert 'id="session-cost"' not in alice.get("/").text  # a new chat has no total yet


def test_the_running_total_comes_out_of_band_when_a_reply_ends(app, alice):
    first = send(alice).json
    wait_final(app, first["message_id"])
    with app.app_context():  # an earlier reply that cost something
        db.session.get(Message, first["message_id"]).usage = usage(1000, 200, 0.75)
        db.session.commit()
    second = send(alice, session_id=first["session_id"]).json
    wait_final(app, second["message_id"])
    final = alice.get(f"/chat/{first['session_id']}/stream", query_string={"message_id": second["message_id"]})
    assert final.mimetype == "text/event-stream"
    match = re.search(r'<p class="session-cost" id="session-cost"[^>]*hx-swap-oob="true"', final.text)
    assert match, final.text[:2000]
    assert "1,000 in · 200 out · $0.75" in final.text
    stopped = alice.post(f"/chat/{first['session_id']}/stop", headers={"HX-Request": "true"})
    assert stopped.status_code == 200
    assert 'id="session-cost"' in stopped.text and "1,000 in · 200 out · $0.75" in stopped.text


# ---- the migration's back-fill --------------------------------------------------------------------


def test_the_migration_fills_model_and_numbers_of_existing_replies(app_config, tmp_path):
    from flask_migrate import downgrade, upgrade

    from services.webui import create_app

    config = {**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'fresh.db'}"}
    fresh = create_app(config)
    with fresh.app_context():
        upgrade(revision="0005")
        now = "2026-01-02 03:04:05"
        statements = [
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'u', 'x', 'user', :now)",
            "INSERT INTO conversation_sessions (id, user_id, agent_id, agent_name, parent_role, model_id, title,"
            " created_at, updated_at) VALUES ('s1', 1, 'architect', 'Architect', '', 'session-model', 't', :now, :now)",
            "INSERT INTO messages (id, session_id, role, message_type, content, status, usage, created_at)"
            " VALUES ('m1', 's1', 'user', 'chat', 'q', 'complete', NULL, :now)",
            "INSERT INTO messages (id, session_id, role, message_type, content, status, usage, created_at)"
            " VALUES ('m2', 's1', 'assistant', 'chat', 'a', 'complete', :with_cost, :now)",
            "INSERT INTO messages (id, session_id, role, message_type, content, status, usage, created_at)"
            " VALUES ('m3', 's1', 'assistant', 'chat', 'a', 'complete', :nonsense, :now)",
            "INSERT INTO runs (message_id, session_id, agent_id, model_id, last_seq, created_at)"
            " VALUES ('m2', 's1', 'architect', 'run-model', 0, :now)",
        ]
        values = {
            "now": now,
            "with_cost": json.dumps(usage(11, 22, 0.33)),
            "nonsense": json.dumps({"prompt_tokens": "lots", "completion_tokens": -4, "cost_usd": 1e300}),
        }
        with db.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), values)
        upgrade()
        with db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, model_id, prompt_tokens, completion_tokens, cost_usd FROM messages ORDER BY id")
            ).all()
        assert [tuple(row) for row in rows] == [
            ("m1", None, 0, 0, None),
            ("m2", "run-model", 11, 22, 0.33),
            ("m3", "session-model", 0, 0, None),
        ]
        downgrade(revision="0005")
        with db.engine.connect() as conn:
            columns = {row[1] for row in conn.execute(text("PRAGMA table_info(messages)"))}
            assert "model_id" not in columns and "cost_usd" not in columns
            # The search triggers survive the round trip (no table was copied).
            triggers = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'"))}
            assert "search_messages_ai" in triggers
        db.engine.dispose()


def test_the_totals_are_added_up_off_the_serving_thread(app, alice, known):
    """The GROUP BY goes through the usage reader's offloader (gevent's threadpool when serving)."""
    reader = app.extensions["switchboard.usage"]
    original, calls = reader.offload, []

    def recording(fn, *args):
        calls.append(fn.__name__)
        return original(fn, *args)

    reader.offload = recording
    assert api(alice)["total"]["replies"] == 4
    assert alice.get("/usage.csv").status_code == 200
    assert calls == ["_read", "_read"]


def test_a_reply_still_ends_on_the_page_when_its_running_total_cannot_be_read(app, alice, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from services.webui.chat import page_stream

    sent = send(alice).json
    wait_final(app, sent["message_id"])

    def unreadable(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(page_stream, "session_cost", unreadable)
    final = alice.get(f"/chat/{sent['session_id']}/stream", query_string={"message_id": sent["message_id"]})
    assert f'id="msg-{sent["message_id"]}"' in final.text and 'data-status="error"' in final.text
    assert 'id="session-cost"' not in final.text
