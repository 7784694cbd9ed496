"""Helpers shared by the test modules: registries on free ports, CSRF-aware logged-in clients."""

from __future__ import annotations

import re
import time
from pathlib import Path

from services.agents.fleet import free_port
from services.agents.registry_files import registry_to_toml

TEST_SECRET = "test-secret-key-0123456789abcdef"


def write_registry(path: Path, agents: list[dict]) -> Path:
    """A registry TOML for tests: [{agent_id, port, parent_role?, protocol?, models?}].

    Written as given, not validated: some tests need a registry that is wrong on purpose.
    `models` are (model_id, context_window) pairs, optionally followed by a tokenizer name
    ("cl100k_base") and/or True for a vision model.
    """
    data = {
        "agents": [
            {
                "agent_id": agent["agent_id"],
                "name": agent.get("name", agent["agent_id"].title()),
                "parent_role": agent.get("parent_role", ""),
                "host": agent.get("host", "127.0.0.1"),
                "port": agent["port"],
                "protocol": agent.get("protocol", "native"),
                "api_key_env": agent.get("api_key_env"),
                "models": [
                    _model_entry(model) for model in agent.get("models", [("ref-standard", 32768), ("ref-fast", 8192)])
                ],
            }
            for agent in agents
        ]
    }
    path.write_text(registry_to_toml(data))
    return path


def _model_entry(model: tuple) -> dict:
    model_id, window, *extras = model
    entry = {
        "model_id": model_id,
        "name": model_id,
        "context_window": window,
        "cost_per_1m_input": 1.0,
        "cost_per_1m_output": 2.0,
        "vision": any(extra is True for extra in extras),
    }
    tokenizer = next((extra for extra in extras if isinstance(extra, str)), None)
    if tokenizer:
        entry["tokenizer"] = tokenizer
    return entry


def default_test_agents() -> list[dict]:
    """Agents on free ports where nothing listens: for tests that never reach an agent."""
    return [
        {"agent_id": "architect", "port": free_port()},
        {"agent_id": "dir-code", "port": free_port(), "parent_role": "architect"},
    ]


def base_config(tmp_path: Path, db_path: Path, agents_file: Path) -> dict:
    return {
        "TESTING": True,
        "SECRET_KEY": TEST_SECRET,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db_path}",
        "AGENTS_FILE": str(agents_file),
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "HEARTBEAT_SECONDS": 0.5,
        "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
    }


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', html
    )
    assert match, "page has no CSRF token"
    return match.group(1)


class UserClient:
    """A test client logged in as one user, which adds the CSRF header to writes."""

    def __init__(self, app, username: str, password: str):
        self.client = app.test_client()
        self.username = username
        page = self.client.get("/login")
        response = self.client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_from(page.text)},
        )
        assert response.status_code == 302, response.text
        self.csrf = self.client.get("/api/me").json["csrf_token"]

    def __getattr__(self, name):
        return getattr(self.client, name)

    def _write(self, method, url, **kwargs):
        headers = dict(kwargs.pop("headers", {}) or {})
        headers.setdefault("X-CSRFToken", self.csrf)
        return getattr(self.client, method)(url, headers=headers, **kwargs)

    def post(self, url, **kwargs):
        return self._write("post", url, **kwargs)

    def patch(self, url, **kwargs):
        return self._write("patch", url, **kwargs)

    def put(self, url, **kwargs):
        return self._write("put", url, **kwargs)

    def delete(self, url, **kwargs):
        return self._write("delete", url, **kwargs)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
