"""HealthChecker: up, down with a reason, caching, and an impostor on the port."""

import json
import threading
from dataclasses import replace

import pytest

from services.agents.fleet import free_port
from services.gateway import HealthChecker

from .helpers import LocalHTTPServer

pytestmark = pytest.mark.slow  # starts real agent processes


def test_reference_agent_is_up(agent):
    checker = HealthChecker()
    assert checker.status(agent) == "up"
    assert checker.reason(agent) is None


def test_nobody_on_the_port_is_down_with_a_sentence(agent):
    port = free_port()
    missing = replace(agent, port=port)
    checker = HealthChecker()
    assert checker.status(missing) == "down"
    assert checker.reason(missing) == f"Agent ref-child is not answering on its port {port}."


def test_results_are_cached_for_ttl_and_shared_by_concurrent_callers(agent):
    with LocalHTTPServer() as server:
        server.respond(
            "/health", 200, json.dumps({"status": "ok", "agent_id": "ref-child"}).encode(), "application/json"
        )
        local = replace(agent, port=server.port)
        checker = HealthChecker(ttl=3600)
        results = []
        threads = [threading.Thread(target=lambda: results.append(checker.status(local))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == ["up"] * 8
        assert server.hits("/health") == 1
        checker.forget(local)
        checker.status(local)
        assert server.hits("/health") == 2


def test_zero_ttl_probes_every_time(agent):
    with LocalHTTPServer() as server:
        server.respond("/health", 200, b'{"status": "ok", "agent_id": "ref-child"}', "application/json")
        checker = HealthChecker(ttl=0)
        local = replace(agent, port=server.port)
        checker.status(local)
        checker.status(local)
        assert server.hits("/health") == 2


def test_another_agent_on_the_port_is_down(agent):
    with LocalHTTPServer() as server:
        server.respond("/health", 200, b'{"status": "ok", "agent_id": "dir-ops"}', "application/json")
        impostor = replace(agent, port=server.port)
        checker = HealthChecker()
        assert checker.status(impostor) == "down"
        assert checker.reason(impostor) == f"Port {server.port} answers as agent 'dir-ops', not 'ref-child'."


def test_redirect_on_health_is_down_and_not_followed(agent):
    with LocalHTTPServer() as server:
        server.redirect("/health", "/elsewhere")
        server.respond("/elsewhere", 200, b'{"status": "ok", "agent_id": "ref-child"}', "application/json")
        checker = HealthChecker()
        assert checker.status(replace(agent, port=server.port)) == "down"
        assert server.hits("/elsewhere") == 0
