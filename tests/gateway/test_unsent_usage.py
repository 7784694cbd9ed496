"""A reply that never reached its agent costs nothing: zero tokens, $0, marked as not sent.

Every way the request can fail before the agent works on it (no connection, an HTTP error, not
an event stream, a missing API key, a model the registry does not list) ends with that usage; a
reply the agent did work on is still charged (reported or estimated).
"""

from dataclasses import replace

import pytest

from services.agents.fleet import free_port
from services.gateway import Model, open_task

from .helpers import LocalHTTPServer, assert_grammar, collect, user
from .test_openai_adapter import openai_agent

FAST = "@@delay_ms=1 @@first_token_ms=0"
NOTHING = {
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
    "cost_usd": 0.0,
    "estimated": False,
    "reached_agent": False,
}

pytestmark = pytest.mark.slow  # starts real agent processes


def finish(agent, task_id, text="a long question " * 50, model="ref-fast"):
    events, _ = collect(
        open_task(agent, task_id=task_id, session_id="s-1", model_id=model, messages=user(text), connect_timeout=1.0)
    )
    assert_grammar(events)
    return events[-2].data, events[-1].data


def test_agent_down_costs_nothing(agent, task_id):
    usage, done = finish(replace(agent, port=free_port()), task_id)
    assert done["status"] == "error" and "not answering" in done["error"]
    assert usage == NOTHING


def test_http_error_from_the_agent_costs_nothing(agent, task_id):
    ghost = replace(agent, models=agent.models + (Model("ghost", "Ghost", 10, 5.0, 5.0),))
    usage, done = finish(ghost, task_id, model="ghost")
    assert "HTTP 404" in done["error"]
    assert usage == NOTHING


def test_model_missing_from_the_registry_costs_nothing(agent, task_id):
    usage, done = finish(agent, task_id, model="not-listed")
    assert done["status"] == "error"
    assert usage == NOTHING


def test_answer_that_is_not_an_event_stream_costs_nothing(agent, task_id):
    with LocalHTTPServer() as server:
        server.respond("/tasks", 200, b"<html>hello</html>", "text/html")
        usage, done = finish(replace(agent, port=server.port), task_id)
    assert "instead of an event stream" in done["error"]
    assert usage == NOTHING


def test_missing_api_key_costs_nothing(monkeypatch, task_id):
    monkeypatch.delenv("SWITCHBOARD_TEST_KEY", raising=False)
    usage, done = finish(openai_agent(free_port()), task_id, model="canned-1")
    assert done["status"] == "error" and "SWITCHBOARD_TEST_KEY" in done["error"]
    assert usage == NOTHING


def test_a_reply_the_agent_worked_on_is_still_charged(agent, task_id):
    usage, done = finish(agent, task_id, text=f"x @@crash_after=3 {FAST}")
    assert done["status"] == "interrupted"
    assert usage["estimated"] is True and "reached_agent" not in usage
    assert usage["prompt_tokens"] > 0 and usage["cost_usd"] > 0
