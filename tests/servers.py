"""Real processes for end-to-end tests: the reference agents and Switchboard under gunicorn.

`LiveStack` starts a fleet on free loopback ports, migrates a fresh SQLite file, creates a user
and serves the app with gunicorn's gevent workers: the same parts `make run` starts. With
`redis_url` it is the scale-out profile: several workers, and `start_extra_server()` as a second
host, sharing one Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool

from services.agents.fleet import Fleet, FleetError

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
    redis_url: str | None = None  # the scale-out profile: workers and servers share one Redis
    username: str = "tester"
    password: str = "tester-password-123"

    def __post_init__(self):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._assign_agent_ports()
        self.db_path = self.workdir / "switchboard.db"
        self.fleet = None
        self.servers: list[subprocess.Popen] = []
        self._logs = []

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
            "ATTACHMENTS_DIR": str(self.workdir / "attachments"),
            "PORT": str(self.port),
            **({"REDIS_URL": self.redis_url} if self.redis_url else {}),
            **self.env_overrides,
        }

    def _assign_agent_ports(self) -> None:
        self.agents = [
            {"agent_id": agent_id, "parent_role": parent, "name": name, "port": free_port()}
            for agent_id, parent, name in REFERENCE_AGENTS
        ] + list(self.extra_agents)
        self.registry_path = write_registry(self.workdir / "agents.toml", self.agents)
        # The fleet runs only the reference agents: extra agents stay unstarted ("down") unless
        # a test starts something on their port.
        self.fleet_registry_path = write_registry(self.workdir / "fleet.toml", self.agents[: len(REFERENCE_AGENTS)])

    def _start_fleet(self, attempts: int = 3) -> None:
        # A free port can be taken by another process before the agent binds it: pick again.
        for attempt in range(attempts):
            self.fleet = Fleet(str(self.fleet_registry_path))
            try:
                self.fleet.start()
                self.fleet.wait_healthy(timeout=20)
                return
            except FleetError:
                self.fleet.stop()
                if attempt == attempts - 1:
                    raise
                self._assign_agent_ports()

    def agent(self, agent_id: str) -> dict:
        return next(a for a in self.agents if a["agent_id"] == agent_id)

    def agent_url(self, agent_id: str) -> str:
        return f"http://127.0.0.1:{self.agent(agent_id)['port']}"

    def start(self) -> "LiveStack":
        self._start_fleet()
        for args in (["db", "upgrade"], ["users", "create", self.username, "--password", self.password]):
            subprocess.run([str(BIN / "flask"), *args], cwd=ROOT, env=self.env, check=True, capture_output=True)
        self._spawn_server(self.port)
        return self

    def start_extra_server(self) -> str:
        """A second gunicorn on the same database: deterministic "another worker" for tests."""
        port = free_port()
        self._spawn_server(port)
        return f"http://127.0.0.1:{port}"

    def _spawn_server(self, port: int) -> None:
        log = open(self.workdir / f"gunicorn-{port}.log", "w")
        self._logs.append(log)
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env={**self.env, "PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.servers.append(server)
        url = f"http://127.0.0.1:{port}/healthz"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {Path(log.name).read_text()[-2000:]}")
            try:
                requests.get(url, timeout=2)
                return
            except requests.RequestException:  # refused, or accepted before a worker was ready
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer within 30 s")

    def server_log(self) -> str:
        return "\n".join(Path(log.name).read_text() for log in self._logs)

    def stop(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                server.terminate()
        for server in self.servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        if self.fleet:
            self.fleet.stop()
        for log in self._logs:
            log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def login(self, username: str | None = None, password: str | None = None) -> "ApiSession":
        return ApiSession(self.base_url, username or self.username, password or self.password)

    def add_user(self, username: str, password: str) -> None:
        subprocess.run(
            [str(BIN / "flask"), "users", "create", username, "--password", password],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )


# gunicorn closes a keep-alive connection idle for `keepalive` seconds (5, gunicorn.conf.py). A
# request sent on it at that moment gets no answer at all (RemoteDisconnected): urllib3's check
# that the connection is still open passes an instant before the close. A test that waits a few
# seconds between two sends met that once. Retrying would also resend a POST whose worker died
# under it, which fault tests must see; not reusing a connection this close to the server's
# limit removes the race instead.
REUSE_IDLE_SECONDS = 3.0


class _FreshConnectionPool(HTTPConnectionPool):
    """A pool that reconnects rather than reuse a connection idle for REUSE_IDLE_SECONDS."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "switchboard_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since >= REUSE_IDLE_SECONDS:
            conn.close()  # as urllib3 does with a dropped one: the next request connects anew
        return conn

    def _put_conn(self, conn) -> None:
        if conn is not None:
            conn.switchboard_idle_since = time.monotonic()
        super()._put_conn(conn)


class FreshConnectionAdapter(HTTPAdapter):
    """requests' adapter over _FreshConnectionPool (plain http: the live servers are loopback)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "http": _FreshConnectionPool,
        }


class ApiSession(requests.Session):
    """A logged-in HTTP session against a live server, sending the CSRF header on writes."""

    def __init__(self, base_url: str, username: str, password: str):
        super().__init__()
        self.mount("http://", FreshConnectionAdapter())
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
