"""Run the reference agent for every native, loopback agent of a registry.

    python -m services.agents.fleet [--registry config/agents.toml]

starts one process per agent, waits until each answers /health, prints one line per agent
and stays in the foreground until SIGINT or SIGTERM, then stops them all. Tests and the
app launcher use the `Fleet` class directly.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from services.agents.registry_files import free_port, write_test_registry
from services.gateway.registry import DEFAULT_REGISTRY_PATH, PROJECT_ROOT, Agent, RegistryError, load_registry_file
from services.gateway.transport import SESSION

__all__ = ["Fleet", "FleetError", "free_port", "write_test_registry", "is_local_native"]

RESTART_BACKOFF_SECONDS = 2.0


class FleetError(RuntimeError):
    """An agent of the fleet did not start; the message names it and says why."""


def is_local_native(agent: Agent) -> bool:
    """Only agents this machine can play: native protocol on a loopback address."""
    if agent.protocol != "native":
        return False
    if agent.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(agent.host).is_loopback
    except ValueError:
        return False


class Fleet:
    """Start, watch and stop reference-agent processes for one registry file."""

    def __init__(
        self,
        registry_path: str | os.PathLike = DEFAULT_REGISTRY_PATH,
        *,
        log_dir: str | os.PathLike | None = None,
        python: str = sys.executable,
    ):
        self.registry_path = Path(registry_path)
        self.registry = load_registry_file(self.registry_path)
        self.agents = tuple(a for a in self.registry.agents if is_local_native(a))
        self.log_dir = Path(log_dir) if log_dir else None
        self.python = python
        self.processes: dict[str, subprocess.Popen] = {}
        self._restarted_at: dict[str, float] = {}

    def start(self) -> "Fleet":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        for agent in self.agents:
            if agent.agent_id in self.processes:
                continue
            command = [
                self.python,
                "-m",
                "services.agents.reference",
                "--registry",
                str(self.registry_path.resolve()),
                "--agent-id",
                agent.agent_id,
                "--exit-with-parent",
            ]
            if self.log_dir:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log_file = open(self.log_path(agent.agent_id), "ab")
                stdout, stderr = log_file, subprocess.STDOUT
            else:
                log_file, stdout, stderr = None, subprocess.DEVNULL, None
            try:
                self.processes[agent.agent_id] = subprocess.Popen(
                    command,
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdout=stdout,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                )
            finally:
                if log_file:
                    log_file.close()  # the child holds its own descriptor
        return self

    def revive(self, backoff: float = RESTART_BACKOFF_SECONDS) -> list[str]:
        """Restart agents whose process exited (at most once per `backoff` seconds each).

        A crashed reference agent would otherwise stay down until the next `make run`.
        """
        now = time.monotonic()
        dead = [
            agent_id
            for agent_id, process in self.processes.items()
            if process.poll() is not None and now - self._restarted_at.get(agent_id, -backoff) >= backoff
        ]
        for agent_id in dead:
            del self.processes[agent_id]
            self._restarted_at[agent_id] = now
        if dead:
            self.start()  # starts exactly the agents without a process
        return dead

    def log_path(self, agent_id: str) -> Path | None:
        return self.log_dir / f"{agent_id}.log" if self.log_dir else None

    def process(self, agent_id: str) -> subprocess.Popen | None:
        return self.processes.get(agent_id)

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = {a.agent_id: a for a in self.agents}
        while waiting:
            for agent_id, agent in list(waiting.items()):
                process = self.processes.get(agent_id)
                if process is None:
                    raise FleetError(f"Agent {agent_id} was never started; call start() first.")
                if process.poll() is not None:
                    raise FleetError(
                        f"Agent {agent_id} exited with code {process.returncode} before answering "
                        f"on port {agent.port}{self._log_tail(agent_id)}"
                    )
                if _answers_health(agent):
                    del waiting[agent_id]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(sorted(waiting))
                raise FleetError(f"Agents {names} did not answer /health within {timeout:g} seconds.")
            if waiting:
                time.sleep(0.05)

    def _log_tail(self, agent_id: str) -> str:
        path = self.log_path(agent_id)
        if not path or not path.exists():
            return "."
        tail = path.read_text(errors="replace").strip().splitlines()[-3:]
        return ": " + " | ".join(tail) if tail else "."

    def stop(self, timeout: float = 5.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> "Fleet":
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _answers_health(agent: Agent) -> bool:
    try:
        with SESSION.get(f"{agent.base_url}/health", timeout=0.5, allow_redirects=False) as response:
            return response.status_code == 200 and response.json().get("agent_id") == agent.agent_id
    except (requests.RequestException, ValueError, AttributeError):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the reference agents of a registry.")
    parser.add_argument("--registry", default=str(DEFAULT_REGISTRY_PATH))
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    try:
        fleet = Fleet(args.registry)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not fleet.agents:
        print(f"{args.registry} lists no native agents on this machine.", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    fleet.start()
    try:
        fleet.wait_healthy(args.timeout)
    except FleetError as exc:
        print(exc, file=sys.stderr)
        fleet.stop()
        return 1
    width = max(len(a.agent_id) for a in fleet.agents)
    for agent in fleet.agents:
        pid = fleet.processes[agent.agent_id].pid
        print(f"{agent.agent_id:<{width}}  {agent.base_url}  {agent.name} (pid {pid})", flush=True)
    while not stopping.wait(0.5):
        for agent_id in fleet.revive():
            print(f"Agent {agent_id} exited; restarted it.", flush=True)
    fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
