"""The gateway against a real third-party OpenAI-compatible server: LiteLLM's proxy, offline.

`make litellm` installs it in .venv-litellm (its pins would fight ours). The proxy runs
with mock responses, so it needs no network and no provider key; its own master key
stands in for an agent's API key.
"""
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from services.agents.fleet import free_port
from services.gateway import Agent, HealthChecker, Model, open_task
from services.gateway.registry import PROJECT_ROOT

from .helpers import assert_grammar, collect, text_of, types, user

LITELLM = Path(os.environ.get("LITELLM_BIN", PROJECT_ROOT / ".venv-litellm" / "bin" / "litellm"))
MASTER_KEY = "sk-switchboard-test-master"
KEY_ENV = "SWITCHBOARD_LITELLM_KEY"
MOCK_REPLY = "Hello from LiteLLM's mock. It streams this sentence in small pieces."
# Long enough that the stream is still running when the test closes it (about 5000 chunks).
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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def litellm_agent(tmp_path_factory):
    if not LITELLM.exists():
        pytest.skip(f"{LITELLM} is missing; `make litellm` installs it.")
    folder = tmp_path_factory.mktemp("litellm")
    (folder / "config.yaml").write_text(CONFIG)
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "NO_DOCS": "True", "DISABLE_ADMIN_UI": "True"}
    log = open(folder / "litellm.log", "wb")
    process = subprocess.Popen(
        [str(LITELLM), "--config", str(folder / "config.yaml"), "--host", "127.0.0.1",
         "--port", str(port), "--num_workers", "1"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        _wait_until_live(port, process, folder / "litellm.log")
        yield Agent(
            agent_id="litellm", name="LiteLLM mock", parent_role="", port=port, protocol="openai",
            api_key_env=KEY_ENV,
            models=(Model("mock-small", "Mock small", 8192, 1.0, 2.0),
                    Model("mock-long", "Mock long", 8192, 1.0, 2.0),
                    Model("mock-slow-start", "Mock slow start", 8192, 1.0, 2.0)),
        )
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


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, MASTER_KEY)


def start(agent, model, **options):
    return open_task(agent, task_id="litellm-task", session_id="s", model_id=model,
                     messages=user("Say hello."), **options)


def test_streams_tokens_then_one_usage_then_done(litellm_agent, with_key):
    events, _ = collect(start(litellm_agent, "mock-small"))
    assert_grammar(events)
    assert text_of(events) == MOCK_REPLY
    assert types(events).count("token") > 5
    usage = events[-2].data
    assert usage["estimated"] is False
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["cost_usd"] == litellm_agent.model("mock-small").cost_usd(
        usage["prompt_tokens"], usage["completion_tokens"])
    assert events[-1].data == {"status": "complete"}


def test_wrong_key_is_an_http_error(litellm_agent, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    events, _ = collect(start(litellm_agent, "mock-small"))
    assert_grammar(events)
    assert events[-1].data["status"] == "error"
    assert events[-1].data["error"].startswith("Agent litellm answered HTTP 4")
    assert "sk-wrong" not in events[-1].data["error"]


def test_health_probe_uses_v1_models(litellm_agent, with_key, monkeypatch):
    checker = HealthChecker(ttl=0)
    assert checker.status(litellm_agent) == "up", checker.reason(litellm_agent)
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    assert checker.status(litellm_agent) == "down"
    assert "Agent litellm answered HTTP" in checker.reason(litellm_agent)


def test_close_before_the_first_byte_ends_it(litellm_agent, with_key):
    stream = start(litellm_agent, "mock-slow-start", tick=0.05)
    assert next(stream) is None
    threading.Timer(0.2, stream.close).start()
    events, _ = collect(stream)
    assert types(events) == ["usage", "done"] and events[-1].data == {"status": "cancelled"}
    stream._reader.join(timeout=5)
    assert not stream._reader.is_alive()


def test_close_mid_stream_ends_it(litellm_agent, with_key):
    stream = start(litellm_agent, "mock-long")
    events = []
    for event in stream:
        if event is not None:
            events.append(event)
        if types(events).count("token") == 20:
            stream.close()
    assert_grammar(events)
    assert events[-1].data == {"status": "cancelled"}
    assert text_of(events) == LONG_REPLY[:len(text_of(events))]
    assert len(text_of(events)) < len(LONG_REPLY)
    stream._reader.join(timeout=5)
    assert not stream._reader.is_alive()
