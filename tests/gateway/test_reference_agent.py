"""The reference agent over plain HTTP, read with an independent SSE client (sseclient-py)."""

import json
import time
from dataclasses import replace

import pytest
import requests
import sseclient

from services.gateway import open_task

from .helpers import assert_grammar, collect, task_state, text_of, user

pytestmark = pytest.mark.slow  # starts real agent processes


def post_task(agent, task_id, text, model="ref-fast", **extra):
    body = {"task_id": task_id, "session_id": "s-1", "model": model, "messages": user(text), **extra}
    return requests.post(f"{agent.base_url}/tasks", json=body, stream=True, timeout=(2, 10))


def read_events(response) -> list[tuple[str, dict]]:
    client = sseclient.SSEClient(response)
    return [(event.event, json.loads(event.data)) for event in client.events()]


def test_health_names_the_agent(agent):
    body = requests.get(f"{agent.base_url}/health", timeout=2).json()
    assert body["status"] == "ok" and body["agent_id"] == "ref-child"


def test_full_reply_grammar_seen_by_an_independent_client(agent, task_id):
    with post_task(agent, task_id, "Plan the billing export @@delay_ms=1 @@first_token_ms=0") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["status_update", "status_update"]
    assert [data["status"] for _, data in events[:2]] == ["planning", "executing"]
    assert kinds[-2:] == ["usage", "done"] and kinds.count("usage") == 1 and kinds.count("done") == 1
    assert set(kinds[2:-2]) == {"token"}
    assert events[-1][1] == {"status": "complete"}
    text = "".join(data["text"] for kind, data in events if kind == "token")
    assert "Test Child" in text and "Test Root" in text and "Plan the billing export" in text
    assert "```python" in text and "\n- " in text
    usage = events[-2][1]
    assert usage["completion_tokens"] == kinds.count("token")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost_usd"] > 0
    state = task_state(agent, task_id)
    assert state["status"] == "complete" and state["tokens_sent"] == kinds.count("token")
    assert state["stopped_at"] is not None


def test_echo_is_verbatim_and_directives_are_removed(agent, task_id):
    text = '<script>alert("x")</script> & <b>bold</b>\n  indented line @@echo @@delay_ms=0'
    with post_task(agent, task_id, text) as response:
        events = read_events(response)
    echoed = "".join(data["text"] for kind, data in events if kind == "token")
    assert echoed == '<script>alert("x")</script> & <b>bold</b>\n  indented line'


def test_token_count_status_and_error_directives(agent, task_id):
    text = 'x @@tokens=7 @@delay_ms=0 @@first_token_ms=0 @@status=awaiting_approval @@error="disk full"'
    with post_task(agent, task_id, text) as response:
        events = read_events(response)
    assert [kind for kind, _ in events].count("token") == 7
    assert "awaiting_approval" in [data.get("status") for kind, data in events if kind == "status_update"]
    assert events[-1] == ("done", {"status": "error", "error": "disk full"})
    assert task_state(agent, task_id)["status"] == "error"


def test_early_usage_directive_sends_usage_before_tokens(agent, task_id):
    with post_task(agent, task_id, "x @@usage=early @@tokens=3 @@delay_ms=0 @@first_token_ms=0") as response:
        kinds = [kind for kind, _ in read_events(response)]
    assert kinds.index("usage") < kinds.index("token")
    assert kinds[-1] == "done"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"not json", 400),
        (json.dumps({"task_id": "x", "session_id": "s", "model": "ref-fast", "messages": []}).encode(), 400),
        (
            json.dumps(
                {
                    "task_id": "x",
                    "session_id": "s",
                    "model": "ref-fast",
                    "messages": [{"role": "wizard", "content": "hi"}],
                }
            ).encode(),
            400,
        ),
        (json.dumps({"session_id": "s", "model": "ref-fast", "messages": user("hi")}).encode(), 400),
        (json.dumps({"task_id": "x", "session_id": "s", "model": "gpt-9", "messages": user("hi")}).encode(), 404),
    ],
)
def test_bad_requests_get_json_errors(agent, body, status):
    response = requests.post(
        f"{agent.base_url}/tasks", data=body, timeout=2, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)


def test_duplicate_task_id_is_409(agent, task_id):
    with post_task(agent, task_id, "x @@tokens=1 @@first_token_ms=0") as first:
        read_events(first)
    second = post_task(agent, task_id, "again")
    assert second.status_code == 409


def test_unknown_task_is_404_for_status_and_cancel(agent):
    assert requests.get(f"{agent.base_url}/tasks/nope", timeout=2).status_code == 404
    assert requests.post(f"{agent.base_url}/tasks/nope/cancel", timeout=2).status_code == 404


def test_cancel_stops_the_agent_producing_tokens(agent, task_id):
    response = post_task(agent, task_id, "x @@tokens=500 @@delay_ms=10 @@first_token_ms=0")
    client = sseclient.SSEClient(response)
    events = client.events()
    received = 0
    for event in events:
        if event.event == "token":
            received += 1
            if received == 3:
                cancel = requests.post(f"{agent.base_url}/tasks/{task_id}/cancel", timeout=2)
                assert cancel.json() == {"task_id": task_id, "status": "cancelling"}
        if event.event == "done":
            assert json.loads(event.data) == {"status": "cancelled"}
            break
    response.close()
    stopped = task_state(agent, task_id)
    assert stopped["status"] == "cancelled" and stopped["stopped_at"] is not None
    # Every token the agent counted reached us before its done, so the counts agree.
    assert stopped["tokens_sent"] == received
    time.sleep(0.2)  # twenty token intervals, in which a still-running agent would add more
    assert task_state(agent, task_id)["tokens_sent"] == stopped["tokens_sent"]
    again = requests.post(f"{agent.base_url}/tasks/{task_id}/cancel", timeout=2)
    assert again.json() == {"task_id": task_id, "status": "cancelled"}


def test_openai_endpoint_streams_what_the_gateway_reads(agent):
    """The same process behind an `openai` entry: OpenAITranslator and TaskStream read its
    chat.completion.chunk stream as tokens, one usage with the agent's counts, and done complete."""
    as_openai = replace(agent, protocol="openai")
    stream = open_task(
        as_openai,
        model_id="ref-fast",
        messages=user("Plan the billing export @@tokens=25 @@delay_ms=1 @@first_token_ms=0"),
    )
    events, _ = collect(stream)
    assert_grammar(events)
    tokens = [e for e in events if e.type == "token"]
    assert len(tokens) == 25
    assert "Test Child" in text_of(events) and "Plan the billing export" in text_of(events)
    usage = next(e.data for e in events if e.type == "usage")
    assert usage["completion_tokens"] == 25 and usage["estimated"] is False
    assert usage["total_tokens"] == usage["prompt_tokens"] + 25
    assert events[-1].data == {"status": "complete"}


def test_openai_endpoint_wire_format_and_errors(agent):
    body = {
        "model": "ref-fast",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": user("x @@tokens=3 @@delay_ms=0 @@first_token_ms=0"),
    }
    with requests.post(f"{agent.base_url}/v1/chat/completions", json=body, stream=True, timeout=(2, 10)) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        datas = [event.data for event in sseclient.SSEClient(response).events()]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert sum(1 for c in chunks for ch in c["choices"] if ch["delta"].get("content")) == 3
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    unknown = requests.post(
        f"{agent.base_url}/v1/chat/completions",
        timeout=2,
        json={"model": "gpt-9", "stream": True, "messages": user("hi")},
    )
    assert unknown.status_code == 404 and isinstance(unknown.json()["error"]["message"], str)


def test_document_filler_repeats_the_whole_markdown_document(agent, task_id):
    with post_task(agent, task_id, "Plan it @@tokens=300 @@filler=doc @@delay_ms=0 @@first_token_ms=0") as response:
        events = read_events(response)
    text = "".join(data["text"] for kind, data in events if kind == "token")
    assert [kind for kind, _ in events].count("token") == 300
    assert text.count("```python") >= 2 and text.count("## Test Child: Plan it") >= 2


ATTACHED = [
    {"type": "text", "text": "@@echo @@delay_ms=0 @@first_token_ms=0 Look"},
    {"type": "file", "name": "app.log", "media_type": "text/plain", "text": "boom at line 3\nmore\n"},
    {"type": "image", "name": "dot.png", "media_type": "image/png", "data": "iVBORw0KGgo="},
]


@pytest.mark.parametrize("protocol", ["native", "openai"])
def test_content_parts_reach_the_agent_over_both_protocols(agent, protocol):
    """Attachments as content parts: native as they are, openai mapped by the gateway to text and
    image_url parts; the agent's @@echo lists what it got."""
    stream = open_task(
        replace(agent, protocol=protocol),
        model_id="ref-fast",
        messages=[{"role": "system", "content": "You are a test."}, {"role": "user", "content": ATTACHED}],
    )
    events, _ = collect(stream)
    assert_grammar(events)
    text = text_of(events)
    assert text.startswith("Look") and "Received 2 attachments" in text
    assert "`app.log` · text/plain · 20 characters · first line: boom at line 3" in text
    image_name = "dot.png" if protocol == "native" else "image"  # OpenAI's image_url has no name
    assert f"`{image_name}` · image/png · ~8 bytes" in text
