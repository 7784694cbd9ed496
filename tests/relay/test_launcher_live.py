"""`make run` as a person starts it (services/launcher.py: migrations, admin, fleet, gunicorn with
the shipped defaults), then faults from outside: a reference agent crashes, the launcher is
stopped with SIGTERM while a reply is being written."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
import requests

from ..servers import ROOT, ApiSession
from ..support import free_port, write_registry

pytestmark = pytest.mark.slow

PASSWORD = "launcher-password-123"


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def launched(tmp_path):
    agents = [
        {"agent_id": "architect", "port": free_port()},
        {"agent_id": "dir-code", "parent_role": "architect", "port": free_port()},
    ]
    registry = write_registry(tmp_path / "agents.toml", agents)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'switchboard.db'}",
        "AGENTS_FILE": str(registry),
        "ADMIN_USERNAME": "admin",
        "ADMIN_PASSWORD": PASSWORD,
        "SECRET_KEY": "launcher-test-secret-0123456789",
        "HEARTBEAT_SECONDS": "0.5",
    }
    env.pop("WEB_WORKERS", None)  # the shipped default
    log = open(tmp_path / "launcher.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.launcher"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a group of its own, as in a terminal: Ctrl-C signals all of it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(base + "/healthz", timeout=2).status_code == 200, timeout=60)
        yield process, base, agents, tmp_path
    finally:
        if process.poll() is None:
            # Its children first: once the launcher is gone they can no longer be found from it.
            family = psutil.Process(process.pid).children(recursive=True)
            process.kill()
            for child in family:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
        log.close()


def agent_pid(port):
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
            return conn.pid
    return None


def test_a_crashed_reference_agent_is_restarted(launched):
    process, base, agents, _ = launched
    port = agents[1]["port"]
    before = wait_for(lambda: agent_pid(port))
    os.kill(before, signal.SIGKILL)
    after = wait_for(lambda: (pid := agent_pid(port)) and pid != before and pid)
    health = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json())
    assert health["agent_id"] == "dir-code" and after != before


def test_ctrl_c_stops_the_agents_with_the_launcher_and_restarts_none(launched):
    """Ctrl-C in a terminal signals the whole process group: the agents stop at the same moment
    as the launcher, and must not be taken for crashed ones and started again."""
    process, _, agents, folder = launched
    for agent in agents:
        wait_for(lambda port=agent["port"]: agent_pid(port))
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert "restarted" not in (folder / "launcher.log").read_text()
    assert all(agent_pid(agent["port"]) is None for agent in agents)


def test_sigterm_ends_live_replies_with_their_text_and_stops_the_agents_tasks(launched):
    process, base, agents, folder = launched
    api = ApiSession(base, "admin", PASSWORD)
    sent = api.post(
        "/api/chat/message", json={"agent_id": "dir-code", "content": "Long one @@tokens=2000 @@delay_ms=20"}
    ).json()
    agent_url = f"http://127.0.0.1:{agents[1]['port']}"
    wait_for(
        lambda: requests.get(f"{agent_url}/tasks/{sent['message_id']}", timeout=2).json().get("tokens_sent", 0) > 20
    )
    process.send_signal(signal.SIGTERM)
    task = wait_for(
        lambda: (
            (t := requests.get(f"{agent_url}/tasks/{sent['message_id']}", timeout=2).json())["status"] == "cancelled"
            and t
        ),
        timeout=15,
    )
    assert task["tokens_sent"] < 2000
    assert process.wait(timeout=30) == 0
    with sqlite3.connect(folder / "switchboard.db") as conn:
        status, content, error = conn.execute(
            "SELECT status, content, error FROM messages WHERE id = ?", (sent["message_id"],)
        ).fetchone()
        ended = conn.execute("SELECT ended_at FROM runs WHERE message_id = ?", (sent["message_id"],)).fetchone()[0]
        active = conn.execute(
            "SELECT active_run_id FROM conversation_sessions WHERE id = ?", (sent["session_id"],)
        ).fetchone()[0]
    assert status == "interrupted" and "stopped" in error and ended is not None and active is None
    assert content and len(content) >= 20  # the text so far is kept
