"""The Redis bus against a real redis-server: quiet runs, and a Redis that does not answer."""

from __future__ import annotations

import sqlite3
import time
from itertools import islice

import pytest

from services.agents.fleet import free_port
from services.webui.runs import run_manager
from services.webui.runs.bus import READ_BLOCK_SECONDS, REDIS_SOCKET_TIMEOUT_SECONDS, BusUnavailable, RedisBus
from services.webui.runs.events import StreamEvent

from ..redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture
def dead_redis_config(app_config):
    """The app's configuration with a REDIS_URL where nothing listens."""
    return {**app_config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


def test_a_run_quiet_for_longer_than_the_socket_timeout_is_waited_for(redis_url):
    """A subscriber asks to wait as long as its heartbeat (15 s by default): the read comes back
    empty, a quiet moment, instead of timing out on the socket and breaking the stream."""
    bus = RedisBus(redis_url, retention_seconds=60)
    try:
        bus.open("quiet-run")  # the log exists, no event yet
        started = time.monotonic()
        assert bus.read("quiet-run", 0, timeout=REDIS_SOCKET_TIMEOUT_SECONDS + 2) == []
        waited = time.monotonic() - started
        # It did wait (a reader of a run with no event yet must not ask again at once, in a
        # loop), and came back before the socket could time out.
        assert READ_BLOCK_SECONDS * 0.9 <= waited < REDIS_SOCKET_TIMEOUT_SECONDS
        bus.publish_many("quiet-run", [StreamEvent(1, "token", {"text": "late"})])
        assert [e.data["text"] for e in bus.read("quiet-run", 0, timeout=READ_BLOCK_SECONDS)] == ["late"]
    finally:
        bus.drop("quiet-run")
        bus.close()


def test_publishing_the_same_events_again_is_harmless(redis_url):
    """A driver offers its events again when an answer was lost: none is added twice, and the
    new ones of the batch are added."""
    bus = RedisBus(redis_url, retention_seconds=60)
    try:
        bus.open("again")
        first = [StreamEvent(1, "token", {"text": "a"}), StreamEvent(2, "token", {"text": "b"})]
        bus.publish_many("again", first)
        bus.publish_many("again", [*first, StreamEvent(3, "done", {"status": "complete"})])
        assert [e.seq for e in bus.events("again")] == [1, 2, 3]
    finally:
        bus.drop("again")
        bus.close()


def test_a_bus_that_does_not_answer_keeps_the_subscriber_waiting_with_heartbeats(dead_redis_config):
    """Nothing listens on the Redis port: the bus says so in its own terms, and a subscriber gets
    heartbeat cues (None) instead of an exception that would cut its client off."""
    bus = RedisBus(dead_redis_config["REDIS_URL"], retention_seconds=60)
    with pytest.raises(BusUnavailable):
        bus.read("some-run", 0, timeout=0.1)
    with pytest.raises(BusUnavailable):
        bus.publish_many("some-run", [StreamEvent(1, "token", {"text": "a"})])
    bus.close()
    from services.webui import create_app

    app = create_app(dead_redis_config)
    manager = run_manager(app)
    try:
        cues = list(islice(manager.subscribe_batches("some-run", 0, lambda: 0.05), 3))
        assert cues == [None, None, None]
    finally:
        manager.shutdown(timeout=0.5)


def test_a_message_sent_while_the_bus_does_not_answer_gets_503_and_nothing_is_saved(dead_redis_config):
    from services.webui import create_app
    from services.webui.auth import create_user
    from tests.support import UserClient

    app = create_app(dead_redis_config)
    try:
        with app.app_context():
            create_user("carol", "correct horse battery")
        carol = UserClient(app, "carol", "correct horse battery")
        response = carol.post("/api/chat/message", json={"agent_id": "dir-code", "content": "Anyone there?"})
        assert response.status_code == 503
        assert "event bus does not answer" in response.json["message"]
        assert response.headers["Retry-After"] == "5"
        db_path = dead_redis_config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    finally:
        run_manager(app).shutdown(timeout=0.5)


def test_stop_while_the_bus_does_not_answer_is_taken_through_the_database(dead_redis_config):
    """The stop cannot travel on the bus: it is flagged in the database, where the driving
    worker's housekeeping finds it; the answer is 202, not a 500."""
    from services.webui import create_app
    from services.webui.auth import create_user
    from tests.support import UserClient

    from .test_approvals import live_request

    app = create_app(dead_redis_config)
    try:
        with app.app_context():
            create_user("erin", "correct horse battery")
        erin = UserClient(app, "erin", "correct horse battery")
        session_id, reply_id = live_request(app, "erin", status="streaming")
        response = erin.post(f"/api/chat/sessions/{session_id}/cancel")
        assert response.status_code == 202 and response.json["status"] == "cancelling"
        db_path = dead_redis_config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
        with sqlite3.connect(db_path) as conn:
            flagged = conn.execute("SELECT cancel_requested_at FROM runs WHERE message_id = ?", (reply_id,)).fetchone()
        assert flagged[0] is not None
    finally:
        run_manager(app).shutdown(timeout=0.5)


def test_a_quiet_stream_gets_its_keep_alive_at_the_heartbeat_not_at_each_quiet_read(app_config, redis_url):
    """The bus comes back from a quiet read every 2 s at most; the client hears from the stream
    once per HEARTBEAT_SECONDS all the same."""
    from services.webui import create_app
    from services.webui.auth import create_user
    from tests.support import UserClient

    from .test_approvals import live_request

    app = create_app({**app_config, "REDIS_URL": redis_url, "HEARTBEAT_SECONDS": 2.6})
    try:
        with app.app_context():
            create_user("fay", "correct horse battery")
        fay = UserClient(app, "fay", "correct horse battery")
        session_id, reply_id = live_request(app, "fay", status="streaming")  # driven "elsewhere"
        run_manager(app).bus.open(reply_id)  # its log, with no event yet
        response = fay.client.get(f"/api/chat/stream/{session_id}", buffered=False)
        started, heard = time.monotonic(), []
        for chunk in response.response:
            if b"keep-alive" in (chunk if isinstance(chunk, bytes) else chunk.encode()):
                heard.append(time.monotonic() - started)
                if len(heard) == 2:
                    break
        response.close()
        assert 2.4 < heard[0] < 3.5 and 2.4 < heard[1] - heard[0] < 3.5
    finally:
        run_manager(app).bus.drop(reply_id)
        run_manager(app).shutdown(timeout=0.5)
