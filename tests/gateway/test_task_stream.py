"""TaskStream against a real reference agent: grammar, cancel, crash, stall, faults."""

import logging
import math
import threading
import time
from dataclasses import replace

import pytest
import requests

from services.agents.fleet import free_port
from services.gateway import Model, TaskStream, cancel_task, open_task

from .helpers import LocalHTTPServer, assert_grammar, collect, sse, task_state, text_of, types, user

FAST = "@@delay_ms=1 @@first_token_ms=0"

pytestmark = pytest.mark.slow  # starts real agent processes


def start(agent, task_id, text, model="ref-fast", **options):
    return open_task(agent, task_id=task_id, session_id="s-1", model_id=model, messages=user(text), **options)


def test_complete_reply_keeps_the_grammar(agent, task_id):
    events, _ = collect(start(agent, task_id, f"Sketch a cache layer {FAST}"))
    assert_grammar(events)
    assert types(events)[:2] == ["status_update", "status_update"]
    assert events[-1].data == {"status": "complete"}
    assert "Sketch a cache layer" in text_of(events)
    usage = events[-2].data
    tokens = types(events).count("token")
    assert usage["completion_tokens"] == tokens and usage["estimated"] is False
    assert usage["cost_usd"] == agent.model("ref-fast").cost_usd(usage["prompt_tokens"], tokens)


def test_early_usage_is_held_until_the_end(agent, task_id):
    events, _ = collect(start(agent, task_id, f"x @@usage=early @@tokens=4 {FAST}"))
    assert_grammar(events)
    assert types(events).count("token") == 4
    assert events[-2].data["completion_tokens"] == 4 and events[-2].data["estimated"] is False


def test_missing_usage_is_estimated_from_the_text(agent, task_id):
    events, _ = collect(start(agent, task_id, f"x @@usage=none @@tokens=9 {FAST}"))
    assert_grammar(events)
    usage = events[-2].data
    assert usage["estimated"] is True
    assert usage["completion_tokens"] == math.ceil(len(text_of(events)) / 4)
    prompt_chars = sum(len(m["content"]) for m in user(f"x @@usage=none @@tokens=9 {FAST}"))
    assert usage["prompt_tokens"] == math.ceil(prompt_chars / 4)
    model = agent.model("ref-fast")
    assert usage["cost_usd"] == model.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])


def test_agent_error_becomes_a_sentence(agent, task_id):
    events, _ = collect(start(agent, task_id, f'x @@tokens=2 @@error="quota exceeded" {FAST}'))
    assert_grammar(events)
    assert events[-1].data == {"status": "error", "error": "Agent ref-child reported an error: quota exceeded."}


def test_cancel_mid_stream(agent, task_id):
    stream = start(agent, task_id, "x @@tokens=500 @@delay_ms=10 @@first_token_ms=0")
    events = []
    for event in stream:
        if event is None:
            continue
        events.append(event)
        if types(events).count("token") == 5 and len(events) == 7:
            assert cancel_task(agent, task_id) is True
    assert_grammar(events)
    assert events[-1].data == {"status": "cancelled"}
    state = task_state(agent, task_id)
    assert state["status"] == "cancelled" and state["stopped_at"] is not None
    assert state["tokens_sent"] == types(events).count("token") < 500
    time.sleep(0.2)  # room for twenty more tokens, had the agent not stopped
    assert task_state(agent, task_id)["tokens_sent"] == state["tokens_sent"]


def test_cancel_before_the_first_token(agent, task_id):
    stream = start(agent, task_id, "x @@first_token_ms=60000")
    first = next(event for event in stream if event is not None)
    assert first.data["status"] == "planning"
    assert cancel_task(agent, task_id) is True
    events, _ = collect(stream)
    assert_grammar([first, *events])
    assert "token" not in types(events)
    assert events[-1].data == {"status": "cancelled"}
    state = task_state(agent, task_id)
    assert state["status"] == "cancelled" and state["tokens_sent"] == 0


def test_close_before_anything_arrives_ends_cancelled(agent, task_id):
    stream = start(agent, task_id, "x @@first_token_ms=60000")
    stream.close()
    events, _ = collect(stream)
    assert types(events) == ["usage", "done"]
    assert events[-1].data == {"status": "cancelled"}
    assert events[0].data["completion_tokens"] == 0


def test_crash_is_interrupted(agent, task_id):
    events, _ = collect(start(agent, task_id, f"x @@crash_after=5 {FAST}"))
    assert_grammar(events)
    assert types(events).count("token") == 5
    assert events[-1].data == {"status": "interrupted", "error": "Agent ref-child stopped in the middle of its reply."}
    assert events[-2].data["estimated"] is True
    assert task_state(agent, task_id)["status"] == "crashed"


def test_agent_down_names_agent_and_port(agent, task_id):
    port = free_port()
    down = replace(agent, port=port)
    events, _ = collect(start(down, task_id, "hello", connect_timeout=1.0))
    assert_grammar(events)
    assert events[-1].data == {"status": "error", "error": f"Agent ref-child is not answering on its port {port}."}


def test_stall_longer_than_idle_timeout_is_an_error_and_ticks_come_meanwhile(agent, task_id):
    stream = start(agent, task_id, f"x @@stall_after=3 @@stall_ms=30000 {FAST}", idle_timeout=0.5, tick=0.05)
    sequence = []
    for event in stream:
        sequence.append(event.type if event else None)
    assert sequence[-1] == "done"
    assert sequence[-2] == "usage"
    last_token = max(i for i, kind in enumerate(sequence) if kind == "token")
    assert None in sequence[last_token:], "no idle tick while the agent was silent"
    assert sequence.count("token") == 3
    assert task_state(agent, task_id)["tokens_sent"] == 3
    # Giving up on a silent agent also stops its task: the work does not run on unseen.
    assert task_state(agent, task_id)["status"] == "cancelled"


def test_stall_error_sentence(agent, task_id):
    events, _ = collect(
        start(agent, task_id, f"x @@stall_after=1 @@stall_ms=30000 {FAST}", idle_timeout=0.3, tick=0.05)
    )
    assert_grammar(events)
    assert events[-1].data == {"status": "error", "error": "Agent ref-child sent nothing for 0.3 seconds."}


def test_short_stall_produces_ticks_and_then_completes(agent, task_id):
    stream = start(agent, task_id, f"x @@tokens=6 @@stall_after=2 @@stall_ms=400 {FAST}", idle_timeout=10, tick=0.05)
    sequence = [event.type if event else None for event in stream]
    tokens_at = [i for i, kind in enumerate(sequence) if kind == "token"]
    assert len(tokens_at) == 6
    assert None in sequence[tokens_at[1] : tokens_at[2]], "no idle tick during the stall"
    assert sequence[-2:] == ["usage", "done"]


def test_malformed_messages_are_skipped_and_logged(agent, task_id, caplog):
    caplog.set_level(logging.WARNING, logger="switchboard.gateway")
    events, _ = collect(start(agent, task_id, f"x @@malformed=1 @@tokens=12 {FAST}"))
    assert_grammar(events)
    assert types(events).count("token") == 12
    assert events[-1].data == {"status": "complete"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "switchboard.gateway"]
    assert any("malformed" in w and "not JSON" in w for w in warnings), warnings
    assert any("unknown event type 'mystery'" in w for w in warnings), warnings
    assert any("unknown event type None" in w for w in warnings), warnings


def test_unknown_model_on_the_agent_reports_the_http_status(agent, task_id):
    ghost = replace(agent, models=agent.models + (Model("ghost", "Ghost", 10, 0.0, 0.0),))
    events, _ = collect(start(ghost, task_id, "hi", model="ghost"))
    assert_grammar(events)
    assert events[-1].data == {"status": "error", "error": "Agent ref-child answered HTTP 404 (unknown model 'ghost')."}


def test_model_missing_from_the_registry_never_reaches_the_agent(agent, task_id):
    events, _ = collect(start(agent, task_id, "hi", model="not-listed"))
    assert events[-1].data == {"status": "error", "error": "Agent ref-child does not offer model 'not-listed'."}
    assert requests.get(f"{agent.base_url}/tasks/{task_id}", timeout=2).status_code == 404


def test_redirect_is_not_followed(agent, task_id):
    with LocalHTTPServer() as server:
        server.redirect("/tasks", f"{server.url}/recorder")
        server.respond("/recorder", 200, b"event: done\ndata: {}\n\n", "text/event-stream")
        impostor = replace(agent, port=server.port)
        events, _ = collect(start(impostor, task_id, "hi"))
        assert server.hits("/tasks") == 1
        assert server.hits("/recorder") == 0
    assert_grammar(events)
    assert events[-1].data == {
        "status": "error",
        "error": "Agent ref-child answered HTTP 302; Switchboard does not follow redirects from agents.",
    }


def test_answer_that_is_not_an_event_stream_is_an_error(agent, task_id):
    with LocalHTTPServer() as server:
        server.respond("/tasks", 200, b"<html>hello</html>", "text/html")
        events, _ = collect(start(replace(agent, port=server.port), task_id, "hi"))
    assert events[-1].data["status"] == "error"
    assert "'text/html' instead of an event stream" in events[-1].data["error"]


def test_close_from_another_thread_interrupts_a_blocked_read(agent, task_id):
    # tick=None: the consumer blocks on the queue too, so close() must wake both sides.
    stream = start(agent, task_id, "x @@first_token_ms=60000", tick=None)
    first = next(stream)
    assert first.data["status"] == "planning"
    closer = threading.Timer(0.2, stream.close)
    closer.start()
    events, _ = collect(stream)
    assert types(events) == ["usage", "done"]
    assert events[-1].data == {"status": "cancelled"}
    # Without the socket shutdown the reader would sit in recv() for the 120 s idle timeout.
    stream._reader.join(timeout=5)
    assert not stream._reader.is_alive()


def test_a_chunked_stream_is_read_by_its_consumer_once_the_headers_are_in(agent, task_id):
    """No reader thread between the agent and the consumer for the body (body.DirectBody): it
    ends once it has handed the body over, and the reply still arrives whole and in order."""
    stream = start(agent, task_id, "x @@tokens=60 @@delay_ms=40 @@first_token_ms=0")  # 2.4 s
    first = next(e for e in stream if e is not None)
    assert first.type == "status_update"
    reader_name = f"switchboard-task-{task_id}"
    deadline = time.monotonic() + 1.0  # well before the reply's end
    while any(t.name == reader_name for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == reader_name for t in threading.enumerate()), "the reader still reads the body"
    events, _ = collect(stream)
    events = [first, *events]
    assert_grammar(events)
    assert types(events).count("token") == 60 and events[-1].data == {"status": "complete"}


@pytest.mark.parametrize("ends_with_done", [True, False])
def test_a_read_s_first_token_goes_on_before_the_rest_of_the_read(agent, task_id, ends_with_done):
    """A whole reply in one write (a fast model): the consumer gets the first token with nothing
    else of the read pending, so it hands it on at once; the rest follows whole and in order,
    and the body's end, in that same read, still counts."""
    events = [sse("status_update", {"status": "planning"})]
    events += [sse("token", {"text": f"w{n} "}) for n in range(20)]
    if ends_with_done:
        events += [sse("usage", {"prompt_tokens": 3, "completion_tokens": 20}), sse("done", {"status": "complete"})]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    with LocalHTTPServer() as server:
        chunked = [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]
        server.routes["/tasks"] = (200, chunked, [body], 0)
        stream = start(replace(agent, port=server.port), task_id, "hi")
        first = next(e for e in stream if e is not None and e.type == "token")
        assert first.data == {"text": "w0 "}
        assert not stream.batch_pending  # without the cut, 19 more tokens of the read were waiting
        rest, _ = collect(stream)
    assert text_of([first, *rest]) == "".join(f"w{n} " for n in range(20))
    assert types(rest)[-2:] == ["usage", "done"]
    if ends_with_done:
        assert rest[-1].data == {"status": "complete"}
    else:
        assert rest[-1].data["status"] == "interrupted"


def test_close_with_another_status_and_reason(agent, task_id):
    stream = start(agent, task_id, "x @@first_token_ms=60000")
    next(e for e in stream if e is not None)
    stream.close("error", "Switchboard is shutting down.")
    events, _ = collect(stream)
    assert events[-1].data == {"status": "error", "error": "Switchboard is shutting down."}


def test_cancel_task_reports_failure_without_raising(agent):
    assert cancel_task(agent, "never-started") is False
    assert cancel_task(replace(agent, port=free_port()), "x", timeout=0.5) is False


def test_wait_sent_returns_once_the_request_is_out_not_when_answered(agent, task_id):
    with LocalHTTPServer() as server:
        server.hang("/tasks")  # takes the whole request, never answers
        stream = TaskStream(
            replace(agent, port=server.port),
            task_id=task_id,
            session_id="s-1",
            model_id="ref-fast",
            messages=user("hi"),
            connect_timeout=3.0,
            idle_timeout=30.0,
            tick=0.05,
        )
        assert stream.wait_sent(0.1) is False  # nothing started: nothing sent
        stream.start()
        assert stream.wait_sent(5.0) is True
        deadline = time.monotonic() + 5
        while "/tasks" not in server.last_bodies and time.monotonic() < deadline:
            time.sleep(0.01)  # the server records the body in its own thread
        assert b'"task_id"' in server.last_bodies["/tasks"]
        assert next(stream) is None  # still no answer: only an idle tick
        stream.close()
        assert types(collect(stream)[0]) == ["usage", "done"]


def test_wait_sent_returns_when_the_agent_cannot_be_reached(agent, task_id):
    stream = start(replace(agent, port=free_port()), task_id, "hi")
    assert stream.wait_sent(5.0) is True
    events, _ = collect(stream)
    assert events[-1].data["status"] == "error"
