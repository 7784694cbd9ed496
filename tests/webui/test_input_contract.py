"""Issue #10: nothing a logged-in user sends can cause a 500.

Regression tests for the review's findings and for what fuzzing found since, each against the one
input layer (services/webui/errors.py) rather than against one route: deep JSON, lone surrogates
and NUL bytes, dates beyond the calendar, numbers beyond any real usage, a malformed HX-Current-URL,
a multipart part without a name, a limit that is not a small number; then a sweep of every route
with all of it at once.
"""

from __future__ import annotations

import io
import json
import logging

import pytest

from services.webui.extensions import db
from services.webui.models import ConversationSession, Message

from .test_sessions import add_session, conversation, count

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
DEEP = 100_000


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def document_for(client, session_id: str) -> dict:
    response = client.get(f"/api/chat/sessions/{session_id}/export")
    assert response.status_code == 200, response.text
    return response.json


def api_write_routes(app, session_id: str):
    """Every write route under /api/, with a real session of the caller in its URL."""
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods & WRITE_METHODS):
            values = {arg: session_id for arg in rule.arguments}
            yield method, rule.build(values, append_unknown=False)[1]


# ---- JSON depth ---------------------------------------------------------------------------------


def test_deeply_nested_json_is_400_on_every_api_write_route(app, alice):
    session_id = add_session(app, "alice", messages=conversation())
    checked = 0
    for method, url in api_write_routes(app, session_id):
        response = alice.open(
            url, method=method, data=deep_json(), content_type="application/json", headers={"X-CSRFToken": alice.csrf}
        )
        assert response.status_code == 400, f"{method} {url} -> {response.status_code}"
        assert "nested" in response.json["message"], response.json
        checked += 1
    assert checked >= 6
    assert count(app, ConversationSession) == 1


def test_json_deeper_than_the_limit_but_parseable_is_400(alice):
    body = {"agent_id": "architect", "content": "hi", "extra": json.loads(deep_json(100))}
    response = alice.post("/api/chat/message", json=body)
    assert response.status_code == 400 and "nested" in response.json["message"]


def test_a_deeply_nested_import_file_is_refused(app, alice):
    upload = alice.post(
        "/api/chat/sessions/import",
        data={"file": (io.BytesIO(deep_json().encode()), "deep.json")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 400 and "nested" in upload.json["message"]
    page = alice.post(
        "/sessions/import",
        data={"file": (io.BytesIO(deep_json().encode()), "deep.json")},
        content_type="multipart/form-data",
    )
    assert page.status_code == 400 and "nested" in page.text and "<form" in page.text
    assert count(app, ConversationSession) == 0


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ('{"content": NaN}', "not valid JSON"),
        ('{"content": 1e400}', "too large"),
        ('{"content": ' + "9" * 400 + "}", "too large"),
        ('{"content": ' + "9" * 5000 + "}", "too large"),
    ],
)
def test_json_numbers_json_cannot_carry_are_400(alice, raw, fragment):
    response = alice.post("/api/chat/message", data=raw, content_type="application/json")
    assert response.status_code == 400 and fragment in response.json["message"], response.json


# ---- lone surrogates and NUL bytes --------------------------------------------------------------


LONE_SURROGATE = '"hello \\ud800 world"'  # as JSON text: json.loads turns it into a lone surrogate


def test_a_lone_surrogate_in_a_message_is_400(app, alice):
    raw = '{"agent_id": "architect", "content": ' + LONE_SURROGATE + "}"
    response = alice.post("/api/chat/message", data=raw, content_type="application/json")
    assert response.status_code == 400 and "surrogate" in response.json["message"]
    assert count(app, ConversationSession) == 0


def test_a_paired_surrogate_is_ordinary_text(app, alice):
    session_id = add_session(app, "alice")
    raw = '{"title": "smile \\ud83d\\ude00"}'
    response = alice.patch(f"/api/chat/sessions/{session_id}", data=raw, content_type="application/json")
    assert response.status_code == 200 and response.json["title"] == "smile \U0001f600"


def test_a_lone_surrogate_in_a_title_is_400(app, alice):
    session_id = add_session(app, "alice", title="Before")
    raw = '{"title": ' + LONE_SURROGATE + "}"
    response = alice.patch(f"/api/chat/sessions/{session_id}", data=raw, content_type="application/json")
    assert response.status_code == 400 and "surrogate" in response.json["message"]
    assert alice.get(f"/api/chat/sessions/{session_id}").json["session"]["title"] == "Before"


def test_a_lone_surrogate_in_a_json_key_is_400(alice):
    raw = '{"agent_id": "architect", "content": "hi", ' + LONE_SURROGATE + ": 1}"
    response = alice.post("/api/chat/message", data=raw, content_type="application/json")
    assert response.status_code == 400 and "surrogate" in response.json["message"]


def test_a_lone_surrogate_in_an_import_is_refused(app, alice):
    session_id = add_session(app, "alice", messages=conversation())
    document = document_for(alice, session_id)
    raw = json.dumps(document).replace('"How do I migrate', '"\\udc80 How do I migrate')
    assert "\\udc80" in raw
    response = alice.post("/api/chat/sessions/import", data=raw, content_type="application/json")
    assert response.status_code == 400 and "surrogate" in response.json["message"]
    assert count(app, ConversationSession) == 1


@pytest.mark.parametrize(
    "send",
    [
        lambda c, sid: c.post("/api/chat/message", json={"agent_id": "architect", "content": "a\x00b"}),
        lambda c, sid: c.patch(f"/api/chat/sessions/{sid}", json={"title": "a\x00b"}),
        lambda c, sid: c.post(f"/sessions/{sid}/rename", data={"title": "a\x00b"}),
        lambda c, sid: c.post("/chat/send", data={"agent_id": "architect", "content": "a\x00b"}),
        lambda c, sid: c.get("/api/chat/sessions", query_string={"q": "a\x00b"}),
        lambda c, sid: c.get("/sessions", query_string={"q": "a\x00b"}),
        lambda c, sid: c.get("/api/models", query_string={"agent_id": "a\x00b"}),
        lambda c, sid: c.get("/api/chat/sessions/abc%00def"),
    ],
    ids=["api-message", "api-title", "form-title", "form-message", "api-query", "page-query", "models-query", "path"],
)
def test_a_nul_byte_anywhere_in_the_input_is_400(app, alice, send):
    session_id = add_session(app, "alice", title="Before")
    response = send(alice, session_id)
    assert response.status_code == 400, response.text
    assert "NUL" in response.text
    assert alice.get(f"/api/chat/sessions/{session_id}").json["session"]["title"] == "Before"
    assert count(app, Message) == 0


# ---- dates beyond the calendar -----------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"from": "0001-01-01T00:00:00+05:00"},
        {"to": "0001-01-01"},
        {"from": "9999-12-31T23:00:00-05:00"},
        {"from": "1969-12-31"},
    ],
)
def test_dates_beyond_the_calendar_are_400_on_the_api_and_the_page(alice, params):
    response = alice.get("/api/chat/sessions", query_string=params)
    assert response.status_code == 400 and "1970" in response.json["message"], response.json
    page = alice.get("/sessions", query_string=params)
    assert page.status_code == 400 and "1970" in page.text


def test_the_last_day_of_the_calendar_is_a_valid_end(app, alice):
    add_session(app, "alice", title="Kept")
    for params in ({"to": "9999-12-31"}, {"to": "9999-12-31", "from": "1970-01-01"}):
        response = alice.get("/api/chat/sessions", query_string=params)
        assert response.status_code == 200, response.text
        assert [s["title"] for s in response.json["sessions"]] == ["Kept"]
        assert alice.get("/sessions", query_string=params).status_code == 200


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "1969-07-20T20:17:00Z",
    ],
)
def test_an_import_with_timestamps_beyond_the_calendar_is_refused(app, alice, stamp):
    session_id = add_session(app, "alice", messages=conversation())
    document = document_for(alice, session_id)
    document["session"]["created_at"] = stamp
    response = alice.post("/api/chat/sessions/import", json=document)
    assert response.status_code == 422 and "1970" in response.json["message"], response.json
    assert count(app, ConversationSession) == 1


# ---- usage numbers ------------------------------------------------------------------------------


def test_an_import_with_absurd_usage_numbers_is_refused(app, alice):
    session_id = add_session(app, "alice", messages=conversation())
    document = document_for(alice, session_id)
    document.pop("totals")
    document["messages"][1]["usage"]["prompt_tokens"] = 10**13
    response = alice.post("/api/chat/sessions/import", json=document)
    assert response.status_code == 422 and "prompt_tokens" in response.json["message"], response.json
    raw = json.dumps(document).replace(str(10**13), "1" + "0" * 400)
    response = alice.post("/api/chat/sessions/import", data=raw, content_type="application/json")
    assert response.status_code == 400 and "too large" in response.json["message"]
    assert count(app, ConversationSession) == 1


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10**400, "completion_tokens": 3, "total_tokens": 10**400, "cost_usd": 1e308 * 10},
        {"prompt_tokens": "lots", "completion_tokens": 3, "total_tokens": [1, 2], "cost_usd": {"usd": 1}},
        {"prompt_tokens": -10, "completion_tokens": 3, "total_tokens": True, "cost_usd": float("nan")},
    ],
    ids=["huge", "not-numbers", "negative-bool-nan"],
)
def test_stored_usage_numbers_that_are_not_sane_do_not_break_any_page(app, alice, usage):
    """Rows written before the bounds existed (or by a misbehaving agent) still render."""
    session_id = add_session(app, "alice", messages=conversation())
    with app.app_context():
        reply = db.session.query(Message).filter_by(session_id=session_id, role="assistant").one()
        reply.usage_json = json.dumps(usage)
        db.session.commit()
    for url in (
        f"/chat/{session_id}",
        f"/sessions/{session_id}",
        f"/api/chat/sessions/{session_id}",
        f"/api/chat/sessions/{session_id}/export?format=json",
        f"/api/chat/sessions/{session_id}/export?format=md",
        f"/sessions/{session_id}/delete",
    ):
        response = alice.get(url)
        assert response.status_code == 200, f"{url} -> {response.status_code}"
    detail = alice.get(f"/api/chat/sessions/{session_id}").json
    assert detail["totals"]["completion_tokens"] == 3 and detail["totals"]["prompt_tokens"] == 0


# ---- a logged-out htmx request ------------------------------------------------------------------


@pytest.mark.parametrize("current", ["http://[::1", "http://[", "//[x]/y", "\x00"])
def test_a_malformed_hx_current_url_is_a_plain_401(client, caplog, current):
    caplog.set_level(logging.INFO)
    response = client.get("/chat/gauge", headers={"HX-Request": "true", "HX-Current-URL": current})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_well_formed_hx_current_url_still_comes_back_after_login(client):
    response = client.get(
        "/chat/gauge", headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/sessions?q=x"}
    )
    assert response.status_code == 401 and "next=/sessions?q%3Dx" in response.headers["HX-Redirect"]


# ---- every route, hostile input -----------------------------------------------------------------


HOSTILE_ARGS = [
    {"q": "a\x00b"},
    {"from": "0001-01-01T00:00:00+05:00"},
    {"to": "9999-12-31T23:59:59-05:00"},
    {"limit": "9" * 5000, "message_id": "9" * 5000, "after": "9" * 5000, "last_event_id": "9" * 5000},
    {"agent_id": "architect", "model_id": "x" * 10_000, "session_id": "\x00", "format": "\x00"},
    {"next": "//[", "title": "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")},
]
HOSTILE_HEADERS = {"HX-Request": "true", "HX-Current-URL": "http://[", "Last-Event-ID": "1" * 5000, "HX-Target": "\x00"}


def every_route(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "auth.logout"):  # logout would end the login the sweep needs
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule


def hostile_sweep(app, user) -> int:
    """Every route of the app, as a logged-in user, with query args, form fields, JSON bodies and
    headers that once broke something somewhere: a 4xx or a success, never a 5xx. Also run on
    PostgreSQL (test_sessions_postgres.py), which refuses NUL where SQLite stores it."""
    checked = 0
    for method, rule in every_route(app):
        for args in HOSTILE_ARGS:
            for send in (
                dict(query_string=args),
                dict(data=args),
                dict(data=json.dumps({**args, "deep": json.loads(deep_json(80))}), content_type="application/json"),
                dict(data=deep_json(), content_type="application/json", headers=HOSTILE_HEADERS),
            ):
                # A fresh session each time: a delete or archive must not hide the next request's path.
                values = {arg: add_session(app, user.username, messages=conversation()) for arg in rule.arguments}
                values.update({"fmt": "json"} if "fmt" in values else {})
                url = rule.build(values, append_unknown=False)[1]
                headers = {"X-CSRFToken": user.csrf, **send.pop("headers", {})}
                response = user.client.open(url, method=method, headers=headers, buffered=False, **send)
                status = response.status_code
                response.close()  # a stream is not read to its end
                assert status < 500, f"{method} {url} {str(send)[:300]} -> {status}"
                checked += 1
    return checked


def test_no_route_answers_500_to_hostile_input(app, alice):
    assert hostile_sweep(app, alice) >= 500


@pytest.mark.parametrize("limit", ["\u00b2", "9" * 5000, "-1", "1e2"])
def test_a_limit_that_is_not_a_small_ascii_number_is_400(alice, limit):
    response = alice.get("/api/chat/sessions", query_string={"limit": limit})
    assert response.status_code == 400 and "limit must be a whole number" in response.json["message"]
    assert alice.get("/sessions", query_string={"limit": limit}).status_code == 400


def test_a_refusal_is_logged_in_and_carries_the_request_id(client, alice):
    refused = alice.get("/api/chat/sessions", query_string={"q": "\x00"}, headers={"X-Request-ID": "abc123def456"})
    assert refused.status_code == 400 and refused.headers["X-Request-ID"] == "abc123def456"
    logged_out = client.get("/api/chat/sessions", query_string={"q": "\x00"})
    assert logged_out.status_code == 401  # the login check comes first: nothing is said about the input


@pytest.mark.parametrize("url", ["/api/chat/sessions/import", "/sessions/import", "/chat/send"])
def test_a_multipart_part_without_a_name_is_400(app, alice, url):
    body = (
        b"--b\r\nContent-Disposition: form-data\r\n\r\nhello\r\n"
        b'--b\r\nContent-Disposition: form-data; name="content"\r\n\r\nhi\r\n--b--\r\n'
    )
    response = alice.post(url, data=body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400 and "has no name" in response.text
    assert count(app, ConversationSession) == 0


@pytest.mark.parametrize(
    "content, fragment",
    [
        (deep_json(), "nested"),
        ('{"format": "switchboard.session", "version": 1, "session": {"title": "\\ud800"}}', "surrogate"),
    ],
    ids=["deep", "surrogate"],
)
def test_the_cli_import_refuses_with_a_sentence_not_a_traceback(app, runner, alice, tmp_path, content, fragment):
    path = tmp_path / "export.json"
    path.write_text(content)
    result = runner.invoke(args=["sessions", "import", str(path), "--user", "alice"])
    assert result.exit_code == 1 and fragment in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert count(app, ConversationSession) == 0


# ---- the resume point of a stream ---------------------------------------------------------------


@pytest.mark.parametrize("event_id", ["9" * 30, "+" + "9" * 19, "9_999_999_999_999_999_999", " 99999999999999999999 "])
def test_an_event_id_beyond_64_bits_is_400_not_a_database_overflow(app, alice, event_id):
    session_id = add_session(app, "alice", messages=conversation())
    for url in (f"/api/chat/stream/{session_id}", f"/chat/{session_id}/stream"):
        by_header = alice.get(url, headers={"Last-Event-ID": event_id})
        assert by_header.status_code == 400 and "Last-Event-ID" in by_header.text, (url, by_header.status_code)
        by_query = alice.get(url, query_string={"last_event_id": event_id})
        assert by_query.status_code == 400, (url, by_query.status_code)


def test_an_event_id_that_is_not_a_number_still_starts_the_stream_over(app, alice):
    session_id = add_session(app, "alice", messages=conversation())
    response = alice.get(f"/api/chat/stream/{session_id}", headers={"Last-Event-ID": "not-a-number"})
    assert response.status_code == 200 and "event: done" in response.text
