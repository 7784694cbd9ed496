"""Is an agent up? A cached, thread-safe probe per agent.

Native agents are probed with GET /health (and must say they are the agent we expect, so a
stray process on the port is not mistaken for it); OpenAI-compatible ones with GET /v1/models.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from . import transport
from .registry import Agent


@dataclass(frozen=True)
class HealthResult:
    status: str  # "up" or "down"
    reason: str | None  # one sentence when down
    checked_at: float  # time.monotonic()


class HealthChecker:
    def __init__(self, ttl: float = 3.0, timeout: float = 0.5):
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._results: dict[tuple, HealthResult] = {}
        # One lock per agent so concurrent page loads share a probe instead of each sending one.
        self._probe_locks: dict[tuple, threading.Lock] = {}

    def status(self, agent: Agent) -> str:
        return self.check(agent).status

    def reason(self, agent: Agent) -> str | None:
        return self.check(agent).reason

    def check(self, agent: Agent) -> HealthResult:
        key = (agent.agent_id, agent.base_url, agent.protocol)
        with self._lock:
            cached = self._results.get(key)
            if cached and time.monotonic() - cached.checked_at < self.ttl:
                return cached
            probe_lock = self._probe_locks.setdefault(key, threading.Lock())
        with probe_lock:
            with self._lock:
                cached = self._results.get(key)
                if cached and time.monotonic() - cached.checked_at < self.ttl:
                    return cached
            result = self._probe(agent)
            with self._lock:
                self._results[key] = result
            return result

    def forget(self, agent: Agent | None = None) -> None:
        """Drop cached results (one agent's, or all) so the next call probes again."""
        with self._lock:
            if agent is None:
                self._results.clear()
            else:
                self._results.pop((agent.agent_id, agent.base_url, agent.protocol), None)

    def _probe(self, agent: Agent) -> HealthResult:
        def down(reason: str) -> HealthResult:
            return HealthResult("down", reason, time.monotonic())

        path = "/v1/models" if agent.protocol == "openai" else "/health"
        try:
            headers = transport.auth_headers(agent)
            response = transport.SESSION.get(
                f"{agent.base_url}{path}",
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except transport.MissingApiKey as exc:
            return down(str(exc))
        except requests.RequestException as exc:
            if transport.is_connect_failure(exc):
                return down(transport.not_answering(agent))
            return down(f"Agent {agent.agent_id} did not answer its health check in time.")
        with response:
            if response.status_code != 200:
                return down(
                    transport.http_status_sentence(
                        agent, response.status_code, response.content[: transport.ERROR_BODY_BYTES]
                    )
                )
            if agent.protocol == "native":
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict) or body.get("status") != "ok":
                    return down(f"Agent {agent.agent_id} did not report status ok.")
                answered_as = body.get("agent_id")
                if answered_as != agent.agent_id:
                    return down(f"Port {agent.port} answers as agent {answered_as!r}, not {agent.agent_id!r}.")
        return HealthResult("up", None, time.monotonic())
