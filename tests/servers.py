"""Real processes for end-to-end tests: the reference agents and Switchboard under gunicorn.

`LiveStack` starts a fleet on free loopback ports, migrates a fresh SQLite file, creates a user
and serves the app with gunicorn's gevent workers: the same parts `make run` starts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from services.agents.fleet import Fleet

from .support import TEST_SECRET, csrf_from, free_port, write_registry

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

REFERENCE_AGENTS = [
    ("architect", "", "Architect"),
    ("dir-code", "architect", "Code Director"),
    ("dir-data", "architect", "Data Director"),
]


@dataclass
class LiveStack:
    workdir: Path
    workers: int = 1
    env_overrides: dict = field(default_factory=dict)
    extra_agents: list = field(default_factory=list)
    username: str = "tester"
    password: str = "tester-password-123"

    def __post_init__(self):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.agents = [
            {"agent_id": agent_id, "parent_role": parent, "name": name, "port": free_port()}
            for agent_id, parent, name in REFERENCE_AGENTS
        ] + list(self.extra_agents)
        self.registry_path = write_registry(self.workdir / "agents.toml", self.agents)
        self.db_path = self.workdir / "switchboard.db"
        self.log_path = self.workdir / "gunicorn.log"
        self.fleet = None
        self.server = None

    @property
    def env(self) -> dict:
        return {
            **os.environ,
            "FLASK_APP": "wsgi:app",
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            "AGENTS_FILE": str(self.registry_path),
            "SECRET_KEY": TEST_SECRET,
            "LOGIN_RATE_LIMIT": "1000 per minute",
            "HEARTBEAT_SECONDS": "0.5",
            "WEB_WORKERS": str(self.workers),
            "PORT": str(self.port),
            **self.env_overrides,
        }

    def agent(self, agent_id: str) -> dict:
        return next(a for a in self.agents if a["agent_id"] == agent_id)

    def agent_url(self, agent_id: str) -> str:
        return f"http://127.0.0.1:{self.agent(agent_id)['port']}"

    def start(self) -> "LiveStack":
        self.fleet = Fleet(str(self.registry_path))
        self.fleet.start()
        self.fleet.wait_healthy(timeout=20)
        for args in (["db", "upgrade"], ["users", "create", self.username, "--password", self.password]):
            subprocess.run([str(BIN / "flask"), *args], cwd=ROOT, env=self.env, check=True, capture_output=True)
        self._log = open(self.log_path, "w")
        self.server = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(self.base_url + "/healthz", timeout=1).status_code in (200, 503):
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer within 30 s")

    def stop(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.fleet:
            self.fleet.stop()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def login(self, username: str | None = None, password: str | None = None) -> "ApiSession":
        return ApiSession(self.base_url, username or self.username, password or self.password)

    def add_user(self, username: str, password: str) -> None:
        subprocess.run(
            [str(BIN / "flask"), "users", "create", username, "--password", password],
            cwd=ROOT, env=self.env, check=True, capture_output=True,
        )


class ApiSession(requests.Session):
    """A logged-in HTTP session against a live server, sending the CSRF header on writes."""

    def __init__(self, base_url: str, username: str, password: str):
        super().__init__()
        self.base_url = base_url
        page = self.get(base_url + "/login")
        response = self.post(
            base_url + "/login",
            data={"username": username, "password": password, "csrf_token": csrf_from(page.text)},
            allow_redirects=False,
        )
        assert response.status_code == 302, response.text
        self.headers["X-CSRFToken"] = self.get(base_url + "/api/me").json()["csrf_token"]

    def request(self, method, url, *args, **kwargs):
        if url.startswith("/"):
            url = self.base_url + url
        return super().request(method, url, *args, **kwargs)
