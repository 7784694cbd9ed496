"""LiteLLM's proxy as the third-party OpenAI-compatible server of the tests, run offline.

`make litellm` installs it in .venv-litellm (its pins would fight ours). It serves mock
responses, so it needs no network and no provider key; its master key stands in for an agent's
API key.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from services.agents.fleet import free_port
from services.gateway.registry import PROJECT_ROOT

LITELLM = Path(os.environ.get("LITELLM_BIN", PROJECT_ROOT / ".venv-litellm" / "bin" / "litellm"))
MASTER_KEY = "sk-switchboard-test-master"
KEY_ENV = "SWITCHBOARD_LITELLM_KEY"
MOCK_REPLY = "Hello from LiteLLM's mock. It streams this sentence in small pieces."
# Long enough that the stream is still running when a test stops it (about 5000 chunks).
# LiteLLM's mock does not stop generating when the client leaves, so it is not longer.
LONG_REPLY = "word " * 3000

CONFIG = f"""
model_list:
  - model_name: mock-small
    litellm_params:
      model: openai/mock-small
      api_key: not-used-offline
      mock_response: "{MOCK_REPLY}"
  - model_name: mock-long
    litellm_params:
      model: openai/mock-long
      api_key: not-used-offline
      mock_response: "{LONG_REPLY}"
  - model_name: mock-slow-start
    litellm_params:
      model: openai/mock-slow-start
      api_key: not-used-offline
      mock_response: "late"
      mock_delay: 20
general_settings:
  master_key: {MASTER_KEY}
"""
MODELS = ("mock-small", "mock-long", "mock-slow-start")


def forwarding_model(name: str, upstream_model: str, upstream_port: int) -> str:
    """A model_list entry that forwards to an OpenAI-compatible server (e.g. a reference agent)."""
    return (
        f"  - model_name: {name}\n"
        "    litellm_params:\n"
        f"      model: openai/{upstream_model}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: not-used-offline\n"
    )


@contextmanager
def litellm_proxy(folder: Path, extra_models: str = "", port: int | None = None):
    """Run the proxy on a free loopback port (or `port`); yields the port. `extra_models` are more
    model_list entries (see forwarding_model)."""
    if not LITELLM.exists():
        pytest.skip(f"{LITELLM} is missing; `make litellm` installs it.")
    (folder / "config.yaml").write_text(CONFIG.replace("general_settings:", extra_models + "general_settings:"))
    port = port or free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "NO_DOCS": "True",
        "DISABLE_ADMIN_UI": "True",
    }
    log_path = folder / "litellm.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            str(LITELLM),
            "--config",
            str(folder / "config.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_until_live(port, process, log_path)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(1)  # it would wait out the abandoned mock streams; no need
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_live(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"LiteLLM exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"LiteLLM did not come up: {log_path.read_text()[-2000:]}")
