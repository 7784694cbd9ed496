"""The scale-out profile as the README tells an operator to run it: PostgreSQL (DATABASE_URL) and
Redis (REDIS_URL) shared by two gunicorn servers of two workers each, with real reference agents.
A reply sent to one server is followed, resumed and stopped through the other."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
import sseclient
from sqlalchemy import create_engine, text

from ..postgres_server import postgres_server
from ..redis_server import redis_server
from ..servers import LiveStack
from .test_relay_live import assert_grammar, read_events, send, text_of, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with postgres_server() as server, redis_server() as redis_url:
        name = f"switchboard_scale_{uuid.uuid4().hex[:8]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        try:
            with LiveStack(
                tmp_path_factory.mktemp("scale-out"),
                workers=2,
                redis_url=redis_url,
                env_overrides={"DATABASE_URL": url},
            ) as live:
                live.other_url = live.start_extra_server()
                live.database = create_engine(url)
                yield live
                live.database.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


def stored(stack, message_id):
    with stack.database.connect() as conn:
        return conn.execute(text("SELECT status, content FROM messages WHERE id = :id"), {"id": message_id}).first()


def test_a_reply_is_followed_resumed_and_stored_across_servers_on_postgresql(stack):
    api = stack.login()
    sent = send(api, "Scale out @@tokens=80 @@delay_ms=10")
    first = read_events(api, sent["stream_url"], limit=15, base=stack.other_url)
    rest = read_events(api, sent["stream_url"], last_event_id=first[-1].id)
    events = first + rest
    assert_grammar(events)
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    row = wait_for(lambda: (r := stored(stack, sent["message_id"])) and r.status == "complete" and r)
    assert row.content == text_of(events)


def test_stop_sent_to_the_other_server_on_postgresql(stack):
    api = stack.login()
    sent = send(api, "Stop me @@tokens=400 @@delay_ms=20")
    first = read_events(api, sent["stream_url"], limit=5)
    other = requests.Session()
    other.cookies.update(api.cookies)
    other.headers.update(api.headers)
    assert other.post(f"{stack.other_url}/api/chat/sessions/{sent['session_id']}/cancel").status_code == 202
    events = first + read_events(api, sent["stream_url"], last_event_id=first[-1].id, base=stack.other_url)
    assert json.loads(events[-1].data)["status"] == "cancelled"
    row = wait_for(lambda: (r := stored(stack, sent["message_id"])) and r.status == "cancelled" and r)
    assert row.content == text_of(events)


def test_an_approval_asked_on_one_server_is_answered_and_followed_on_the_other_on_postgresql(stack):
    """The request is stored before it is shown, the answer lands on a server that does not drive
    the run (recorded once in PostgreSQL, forwarded from there), and every stream sees the decision."""
    api = stack.login()
    sent = send(api, 'Scale out @@approval="resize the cluster" @@tokens=20')
    seen = []
    response = api.get(stack.other_url + sent["stream_url"], headers={"Accept": "text/event-stream"}, stream=True)
    try:
        for event in sseclient.SSEClient(response).events():  # up to the request, then wait
            seen.append(event)
            if event.event == "done" or (event.event == "status_update" and "approval" in json.loads(event.data)):
                break
    finally:
        response.close()
    approval = json.loads(seen[-1].data)["approval"]
    assert approval["title"] == "resize the cluster"
    other = requests.Session()
    other.cookies.update(api.cookies)
    other.headers.update(api.headers)
    url = f"{stack.other_url}/api/chat/sessions/{sent['session_id']}/approvals/{approval['approval_id']}"
    first = other.post(url, json={"decision": "approve", "comment": "scale"})
    assert first.status_code == 200 and first.json()["delivered"] is True, first.text
    assert api.post(url.replace(stack.other_url, ""), json={"decision": "reject"}).status_code == 409
    events = read_events(api, sent["stream_url"], last_event_id=seen[-1].id)
    assert [json.loads(e.data)["decision"] for e in events if e.event == "approval"] == ["approve"]
    assert json.loads(events[-1].data)["status"] == "complete"
    agent = requests.get(f"{stack.agent_url('dir-code')}/tasks/{sent['message_id']}", timeout=5).json()
    assert [d["decision"] for d in agent["approvals"]] == ["approve"]
    with stack.database.connect() as conn:
        row = conn.execute(
            text("SELECT decision, decider FROM approvals WHERE message_id = :id"), {"id": sent["message_id"]}
        ).first()
    assert (row.decision, row.decider) == ("approve", stack.username)
