"""The OpenAI-compatible path with canned upstream streams, and secrets staying secret."""

import json
import logging
import threading

from services.gateway import Agent, Model, open_task

from .helpers import LocalHTTPServer, assert_grammar, collect, sse, text_of, types, user

SECRET = "sk-canned-secret-0042"
MODEL = Model("canned-1", "Canned", 4096, cost_per_1m_input=2.0, cost_per_1m_output=8.0)


def openai_agent(port: int, api_key_env: str | None = "SWITCHBOARD_TEST_KEY") -> Agent:
    return Agent(
        agent_id="canned",
        name="Canned",
        parent_role="",
        port=port,
        protocol="openai",
        api_key_env=api_key_env,
        models=(MODEL,),
    )


def chunk(content=None, finish=None, usage=None) -> dict:
    delta = {"content": content} if content is not None else {}
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        body["choices"] = []
        body["usage"] = usage
    return body


def start(agent, **options):
    return open_task(agent, task_id="t-1", session_id="s", model_id="canned-1", messages=user("hi"), **options)


def test_chunks_become_tokens_usage_and_done(monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", SECRET)
    body = b"".join(
        [
            sse(None, {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            sse(None, chunk("Hel")),
            sse(None, chunk("lo, ")),
            sse(None, chunk("wörld")),
            sse(None, chunk(finish="stop")),
            sse(None, chunk(usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})),
            b"data: [DONE]\n\n",
        ]
    ).replace(b"\n", b"\r\n")
    # Cut mid-CRLF and mid-UTF-8, and send the pieces apart, over a body that runs to EOF.
    cuts = [body.index(b"\r\n") + 1, body.index("ö".encode()) + 1, len(body) - 3]
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    with LocalHTTPServer() as server:
        server.stream("/v1/chat/completions", pieces, pause=0.01)
        events, _ = collect(start(openai_agent(server.port)))
        headers = server.last_headers["/v1/chat/completions"]
        request = json.loads(server.last_bodies["/v1/chat/completions"])
    assert_grammar(events)
    assert text_of(events) == "Hello, wörld"
    assert events[-1].data == {"status": "complete"}
    usage = events[-2].data
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (5, 3, 8)
    assert usage["cost_usd"] == MODEL.cost_usd(5, 3) and usage["estimated"] is False
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["model"] == "canned-1" and request["messages"] == user("hi")


def test_stream_without_done_marker_is_interrupted():
    with LocalHTTPServer() as server:
        server.stream("/v1/chat/completions", [sse(None, chunk("partial"))])
        events, _ = collect(start(openai_agent(server.port, api_key_env=None)))
    assert_grammar(events)
    assert text_of(events) == "partial"
    assert events[-1].data == {"status": "interrupted", "error": "Agent canned stopped in the middle of its reply."}


def test_error_chunk_ends_with_error():
    with LocalHTTPServer() as server:
        server.stream(
            "/v1/chat/completions",
            [
                sse(None, chunk("a")),
                sse(None, {"error": {"message": "model overloaded"}}),
            ],
        )
        events, _ = collect(start(openai_agent(server.port, api_key_env=None)))
    assert events[-1].data == {"status": "error", "error": "Agent canned reported an error: model overloaded."}


def test_missing_key_variable_is_named_and_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_TEST_KEY", raising=False)
    with LocalHTTPServer() as server:
        events, _ = collect(start(openai_agent(server.port)))
        assert server.hits("/v1/chat/completions") == 0
    assert events[-1].data == {
        "status": "error",
        "error": "Agent canned needs the environment variable SWITCHBOARD_TEST_KEY, which is not set.",
    }


def test_key_echoed_by_upstream_never_reaches_errors_or_logs(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", SECRET)
    rejection = json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}"}}).encode()
    with LocalHTTPServer() as server:
        server.respond("/v1/chat/completions", 401, rejection, "application/json")
        events, _ = collect(start(openai_agent(server.port)))
    assert events[-1].data == {
        "status": "error",
        "error": "Agent canned answered HTTP 401 (Incorrect API key provided: [redacted]).",
    }
    assert SECRET not in caplog.text


def test_close_while_waiting_for_response_headers():
    # Some servers send no headers until the first token; close() must still stop at once.
    with LocalHTTPServer() as server:
        server.hang("/v1/chat/completions")
        stream = start(openai_agent(server.port, api_key_env=None), tick=0.05)
        assert next(stream) is None  # an idle tick: the request is out, nothing has come back
        threading.Timer(0.1, stream.close).start()
        events, _ = collect(stream)
        stream._reader.join(timeout=5)
        assert not stream._reader.is_alive(), "reader still blocked waiting for headers"
    assert types(events) == ["usage", "done"]
    assert events[-1].data == {"status": "cancelled"}


def test_a_task_request_carries_the_key_but_never_shows_it(monkeypatch):
    """The request is built with the agent's key; its repr (a log line, a traceback) leaves it out."""
    from services.gateway.task_request import task_request

    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", SECRET)
    request = task_request(openai_agent(9), task_id="t-1", session_id="s", model_id="canned-1", messages=user("hi"))
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.url.endswith("/v1/chat/completions") and request.body["model"] == "canned-1"
    assert SECRET not in repr(request) and SECRET not in str(request)
