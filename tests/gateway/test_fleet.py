"""The fleet: its CLI runs and stops the agents; a busy port is reported by name."""

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
import requests

from services.agents.fleet import Fleet, FleetError, free_port, write_test_registry
from services.gateway.registry import PROJECT_ROOT, load_registry_file

pytestmark = pytest.mark.slow  # starts real agent processes


def test_busy_port_is_reported_with_the_agent_name(tmp_path):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    path = write_test_registry(tmp_path / "agents.toml", [{"agent_id": "busy-agent", "port": port}])
    fleet = Fleet(path, log_dir=tmp_path / "logs").start()
    try:
        with pytest.raises(FleetError) as error:
            fleet.wait_healthy(timeout=20)
    finally:
        fleet.stop()
        squatter.close()
    assert "busy-agent" in str(error.value)
    assert f"port {port} is already in use" in str(error.value)


def test_cli_prints_one_line_per_agent_and_stops_them_on_sigterm(tmp_path):
    path = write_test_registry(
        tmp_path / "agents.toml",
        [
            {"agent_id": "cli-root", "name": "CLI Root"},
            {"agent_id": "cli-child", "name": "CLI Child", "parent_role": "cli-root"},
            # Not started: the fleet only plays native agents on loopback addresses.
            {"agent_id": "cli-remote", "protocol": "openai", "port": free_port()},
        ],
    )
    agents = load_registry_file(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.agents.fleet", "--registry", str(path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert "cli-root" in lines[0] and agents.get("cli-root").base_url in lines[0]
        assert "cli-child" in lines[1] and agents.get("cli-child").base_url in lines[1]
        children = psutil.Process(process.pid).children()
        assert len(children) == 2
        for agent_id in ("cli-root", "cli-child"):
            health = requests.get(f"{agents.get(agent_id).base_url}/health", timeout=2).json()
            assert health["agent_id"] == agent_id
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
