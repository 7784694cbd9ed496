"""An OpenAI-compatible server behind an agent_id, through Switchboard: LiteLLM's proxy, offline.

Stop here cannot call an agent's cancel endpoint (there is none); the run closes the upstream. A
stop handled by another server only sets the database flag, so this also proves the watcher of
the worker that drives the run acts on that flag.
"""

from __future__ import annotations

import json

import pytest
import requests

from ..litellm_server import KEY_ENV, MASTER_KEY, MOCK_REPLY, litellm_proxy
from ..redis_server import redis_server
from ..servers import LiveStack
from .test_relay_live import assert_grammar, db_row, read_events, text_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with litellm_proxy(tmp_path_factory.mktemp("litellm")) as port, redis_server() as redis_url:
        agent = {
            "agent_id": "litellm",
            "name": "LiteLLM",
            "parent_role": "architect",
            "port": port,
            "protocol": "openai",
            "api_key_env": KEY_ENV,
            "models": [("mock-small", 8192), ("mock-long", 8192)],
        }
        live = LiveStack(
            tmp_path_factory.mktemp("openai"),
            extra_agents=[agent],
            env_overrides={KEY_ENV: MASTER_KEY},
            redis_url=redis_url,
        )
        with live:
            live.other_url = live.start_extra_server()
            yield live


@pytest.fixture(scope="module")
def api(stack):
    return stack.login()


def send(api, model_id):
    response = api.post(
        "/api/chat/message", json={"agent_id": "litellm", "model_id": model_id, "content": "Say hello."}
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_agents_api_shows_the_openai_agent_up(api):
    agents = {a["agent_id"]: a for a in api.get("/api/agents").json()["agents"]}
    assert agents["litellm"]["status"] == "up" and agents["litellm"]["protocol"] == "openai"


def test_reply_streams_through_switchboard(stack, api):
    sent = send(api, "mock-small")
    events = read_events(api, sent["stream_url"])
    assert_grammar(events)
    assert text_of(events) == MOCK_REPLY
    usage = json.loads(events[-2].data)
    assert usage["estimated"] is False and usage["completion_tokens"] > 0 and usage["cost_usd"] > 0
    assert json.loads(events[-1].data)["status"] == "complete"
    assert db_row(stack, sent["message_id"])["content"] == MOCK_REPLY


def test_stop_from_another_server_closes_the_upstream(stack, api):
    sent = send(api, "mock-long")
    first = read_events(api, sent["stream_url"], limit=20)
    other = requests.Session()
    other.cookies.update(api.cookies)
    other.headers.update(api.headers)
    assert other.post(f"{stack.other_url}/api/chat/sessions/{sent['session_id']}/cancel").status_code == 202
    events = first + read_events(api, sent["stream_url"], last_event_id=first[-1].id)
    assert_grammar(events)
    assert json.loads(events[-1].data)["status"] == "cancelled"
    text = text_of(events)
    assert 0 < len(text) < len("word " * 3000)
    assert db_row(stack, sent["message_id"])["status"] == "cancelled"
