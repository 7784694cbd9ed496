"""The gateway against a real third-party OpenAI-compatible server: LiteLLM's proxy, offline."""

import threading

import pytest

from services.gateway import Agent, HealthChecker, Model, open_task

from ..litellm_server import KEY_ENV, LONG_REPLY, MASTER_KEY, MOCK_REPLY, litellm_proxy
from .helpers import assert_grammar, collect, text_of, types, user

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def litellm_agent(tmp_path_factory):
    with litellm_proxy(tmp_path_factory.mktemp("litellm")) as port:
        yield Agent(
            agent_id="litellm",
            name="LiteLLM mock",
            parent_role="",
            port=port,
            protocol="openai",
            api_key_env=KEY_ENV,
            models=(
                Model("mock-small", "Mock small", 8192, 1.0, 2.0),
                Model("mock-long", "Mock long", 8192, 1.0, 2.0),
                Model("mock-slow-start", "Mock slow start", 8192, 1.0, 2.0),
            ),
        )


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, MASTER_KEY)


def start(agent, model, **options):
    return open_task(
        agent, task_id="litellm-task", session_id="s", model_id=model, messages=user("Say hello."), **options
    )


def test_streams_tokens_then_one_usage_then_done(litellm_agent, with_key):
    events, _ = collect(start(litellm_agent, "mock-small"))
    assert_grammar(events)
    assert text_of(events) == MOCK_REPLY
    assert types(events).count("token") > 5
    usage = events[-2].data
    assert usage["estimated"] is False
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["cost_usd"] == litellm_agent.model("mock-small").cost_usd(
        usage["prompt_tokens"], usage["completion_tokens"]
    )
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
    assert text_of(events) == LONG_REPLY[: len(text_of(events))]
    assert len(text_of(events)) < len(LONG_REPLY)
    stream._reader.join(timeout=5)
    assert not stream._reader.is_alive()
