"""The gateway under gevent monkey-patching (as the web app runs), in a fresh interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.gateway.registry import PROJECT_ROOT

PROBE = Path(__file__).with_name("gevent_probe.py")

pytestmark = pytest.mark.slow  # starts real agent processes


def test_streams_ticks_and_close_work_with_greenlets(reference_fleet, test_registry_path):
    """Also: a reply that arrives in one piece reaches the consumer event by event, so its first
    token is not held back until the reader has parsed all of it."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, str(PROBE), str(test_registry_path)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["streams"]) == 50
    for stream in report["streams"]:
        kinds = stream["kinds"]
        assert kinds.count("token") == 20
        assert kinds[-2:] == ["usage", "done"] and kinds.count("usage") == 1
        assert stream["done"] == {"status": "complete"}
    stall = report["stall"]
    assert stall["kinds"] == ["status_update", "usage", "done"]
    assert stall["done"] == {"status": "cancelled"}
    assert stall["ticks"] >= 1
    assert stall["reader_alive"] is False
    burst = report["burst"]
    assert burst["tokens"] == 200
    assert burst["queued_at_first_token"] <= 1
