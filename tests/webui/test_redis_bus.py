"""The Redis bus against a real redis-server: quiet runs, and a Redis that does not answer."""

from __future__ import annotations

import time
from itertools import islice

import pytest

from services.agents.fleet import free_port
from services.webui import create_app
from services.webui.runs import run_manager
from services.webui.runs.bus import READ_BLOCK_SECONDS, REDIS_SOCKET_TIMEOUT_SECONDS, BusUnavailable, RedisBus
from services.webui.runs.events import StreamEvent

from ..redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


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


def test_a_bus_that_does_not_answer_keeps_the_subscriber_waiting_with_heartbeats(app_config):
    """Nothing listens on the Redis port: the bus says so in its own terms, and a subscriber gets
    heartbeat cues (None) instead of an exception that would cut its client off."""
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", retention_seconds=60)
    with pytest.raises(BusUnavailable):
        bus.read("some-run", 0, timeout=0.1)
    bus.close()
    app = create_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    manager = run_manager(app)
    try:
        cues = list(islice(manager.subscribe_batches("some-run", 0, lambda: 0.05), 3))
        assert cues == [None, None, None]
    finally:
        manager.shutdown(timeout=0.5)
        manager.bus.close()
