"""Progress you can see (issue #11, part 2): a reply's timeline of status updates, folded in by the
one reducer, bounded, carried by snapshots, stored with the message by the driver so it outlives
the event log, shown by the page stream (sent once per step), the review, the API and exports;
and the live progress line's elapsed time and stall notice, from times the server gives."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta, timezone

import pytest

from services.gateway.events import AgentEvent
from services.webui.chat.display import MessageView
from services.webui.chat.progress import TimelineSent, progress_view
from services.webui.extensions import db
from services.webui.fleet import registry
from services.webui.models import Message, utcnow
from services.webui.runs import events as run_events
from services.webui.runs import run_manager
from services.webui.runs.bus import MemoryBus
from services.webui.runs.events import MAX_DETAIL_CHARS, ReplyState, StreamEvent, stamp

from .test_chat_pages import HX, FakeRun, add_run, make_session, sse_messages


def reduce(events) -> ReplyState:
    state = ReplyState()
    for event in events:
        state.apply(event)
    return state


def step(seq, status, detail=None, at=None):
    data = {"status": status}
    if detail is not None:
        data["detail"] = detail
    if at is not None:
        data["at"] = at
    return StreamEvent(seq, "status_update", data)


# ---- the reducer ----------------------------------------------------------------------------------


def test_status_updates_become_the_timeline_with_the_last_output_time():
    state = reduce(
        [
            step(1, "planning", "Reading the request.", "2026-12-01T10:00:00.000000Z"),
            StreamEvent(2, "token", {"text": "Hi", "at": "2026-12-01T10:00:02.000000Z"}),
            step(3, "thinking hard", "  An unknown status is kept as a step.  ", "2026-12-01T10:00:03.000000Z"),
            StreamEvent(4, "token", {"text": "!"}),  # no stamp: the last output time stays
            step(5, "executing"),
            StreamEvent(6, "done", {"status": "complete"}),
            step(7, "planning", "after the end"),
        ]
    )
    assert state.steps == [
        {"status": "planning", "detail": "Reading the request.", "at": "2026-12-01T10:00:00.000000Z"},
        {
            "status": "thinking hard",
            "detail": "An unknown status is kept as a step.",
            "at": "2026-12-01T10:00:03.000000Z",
        },
        {"status": "executing", "detail": None, "at": None},
    ]
    assert state.steps_seen == 3 and state.status == "complete"  # nothing is added after the end
    assert state.last_output_at == "2026-12-01T10:00:03.000000Z"
    assert state.text == "Hi!"


def test_the_timeline_is_bounded_in_steps_and_detail_length(monkeypatch):
    monkeypatch.setattr(run_events, "MAX_STEPS", 5)
    state = reduce([step(seq, "executing", f"step {seq} " + "x" * (MAX_DETAIL_CHARS * 2)) for seq in range(1, 13)])
    assert len(state.steps) == 5 and state.steps_seen == 12
    assert [s["detail"].split()[1] for s in state.steps] == ["8", "9", "10", "11", "12"]  # the latest kept
    assert all(len(s["detail"]) == MAX_DETAIL_CHARS and s["detail"].endswith("…") for s in state.steps)
    assert reduce([step(1, "")]).steps == [] and reduce([step(1, "x" * 500)]).steps[0]["status"] == "x" * 40


def test_a_snapshot_carries_the_timeline_to_a_late_subscriber():
    bus = MemoryBus(cap=10)
    events = []
    for seq in range(1, 61):
        if seq % 10 == 1:
            events.append(step(seq, "executing", f"phase {seq // 10}", stamp()))
        else:
            events.append(StreamEvent(seq, "token", {"text": f"w{seq} "}))
    for event in events:
        bus.publish("r", event)
    late = bus.read("r", 2, timeout=0)
    assert late[0].type == "snapshot" and "steps" in late[0].data
    whole, caught_up = reduce(events), reduce(late)
    assert caught_up.steps == whole.steps and len(whole.steps) == 6
    assert caught_up.steps_seen == 6 and caught_up.last_output_at == whole.last_output_at
    assert caught_up.text == whole.text


def test_a_done_with_the_stored_timeline_replaces_the_one_assembled():
    state = reduce(
        [
            step(1, "planning", "seen live"),
            StreamEvent(2, "done", {"status": "interrupted", "content": "", "steps": [{"status": "executing"}, 7]}),
        ]
    )
    assert state.steps == [{"status": "executing", "detail": None, "at": None}]


def test_the_driver_stamps_status_updates_always_and_tokens_once_a_second(app):
    manager = run_manager(app)
    with app.app_context():
        agent = registry().get("architect")
    run = manager.prepare(agent, "stamped", None, "ref-standard")
    try:
        for _ in range(20):
            manager.driver._emit(run, "token", {"text": "a"})
        manager.driver._emit(run, "status_update", {"status": "executing", "detail": "now"})
        published = run.outbox  # emitted, to be published with the rest of their read

    finally:
        manager.abandon(run)
    tokens = [e for e in published if e.type == "token"]
    assert "at" in tokens[0].data and sum("at" in e.data for e in tokens) < len(tokens)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", published[-1].data["at"])
    assert run.state.steps[-1]["detail"] == "now" and run.state.last_output_at == published[-1].data["at"]


# ---- stored with the message, outliving the event log --------------------------------------------


class ScriptedStream:
    """Stands in for the gateway's TaskStream: the agent's events, then done."""

    batch_pending = False  # every event comes in a read of its own

    def __init__(self, events):
        self.events = events

    def __iter__(self):
        return iter(self.events)

    def close(self, status="cancelled", error=None):
        pass


STEPS = [
    ("planning", "Reading the <b>request</b> & [a link](javascript:alert(1))."),
    ("executing", "Writing the reply."),
]


@pytest.fixture
def finished_reply(app, alice):
    """A reply driven to its end by the real driver and store; then its events are forgotten."""
    sid, (_, reply_id) = make_session(app, "alice", turns=(("user", "hi", "complete"), ("assistant", "", "pending")))
    manager = run_manager(app)
    with app.app_context():
        agent = registry().get("architect")
    run = manager.prepare(agent, reply_id, sid, "ref-standard")
    add_run(app, sid, reply_id, [], ended=False)
    run.stream = ScriptedStream(
        [
            AgentEvent("status_update", {"status": STEPS[0][0], "detail": STEPS[0][1]}),
            AgentEvent("token", {"text": "Hello "}),
            AgentEvent("status_update", {"status": STEPS[1][0], "detail": STEPS[1][1]}),
            AgentEvent("token", {"text": "world"}),
            AgentEvent("usage", {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
            AgentEvent("done", {"status": "complete"}),
        ]
    )
    manager.driver.drive(run)
    manager.abandon(run)  # the event log is gone: only the stored reply is left
    assert not manager.bus.has_log(reply_id)
    return sid, reply_id


def test_the_driver_stores_the_timeline_with_the_message(app, finished_reply):
    _, reply_id = finished_reply
    with app.app_context():
        message = db.session.get(Message, reply_id)
        assert message.status == "complete" and message.content == "Hello world"
        assert [(s["status"], s["detail"]) for s in message.steps] == STEPS
        assert all(s["at"].endswith("Z") for s in message.steps)
        assert json.loads(message.steps_json) == message.steps


def test_api_review_and_exports_show_the_stored_timeline(app, alice, finished_reply):
    sid, reply_id = finished_reply
    detail = alice.get(f"/api/chat/sessions/{sid}").json
    reply = next(m for m in detail["messages"] if m["id"] == reply_id)
    assert [(s["status"], s["detail"]) for s in reply["steps"]] == STEPS
    assert detail["messages"][0]["steps"] == []

    review = alice.get(f"/sessions/{sid}").text
    assert f'id="msg-{reply_id}-steps" open' in review and "Writing the reply." in review
    assert "Reading the &lt;b&gt;request&lt;/b&gt; &amp; [a link](javascript:alert(1))." in review  # plain text
    assert "<b>request</b>" not in review

    markdown = alice.get(f"/api/chat/sessions/{sid}/export", query_string={"format": "md"}).text
    steps = re.findall(r"^- \d\d:\d\d:\d\d · (\w+) · (.*)$", markdown, re.M)
    assert [status for status, _ in steps] == ["planning", "executing"]
    # Agent text is shown as text by any markdown viewer: every punctuation mark escaped.
    assert steps[0][1] == r"Reading the \<b\>request\<\/b\> \& \[a link\]\(javascript\:alert\(1\)\)\."
    assert "<b>" not in markdown and "[a link](" not in markdown

    exported = alice.get(f"/api/chat/sessions/{sid}/export", query_string={"format": "json"}).json
    assert next(m for m in exported["messages"] if m["id"] == reply_id)["steps"] == reply["steps"]


def test_streams_rebuilt_from_the_stored_reply_carry_the_timeline(app, alice, finished_reply):
    sid, reply_id = finished_reply
    raw = alice.get(f"/api/chat/stream/{sid}").text
    done = json.loads(raw.split("event: done\n", 1)[1].split("data: ", 1)[1].split("\n", 1)[0])
    assert [(s["status"], s["detail"]) for s in done["steps"]] == STEPS
    messages, _ = sse_messages(alice.get(f"/chat/{sid}/stream?message_id={reply_id}", headers=HX, buffered=False))
    final = messages[-1].data
    assert f'id="msg-{reply_id}-steps"' in final and "Writing the reply." in final
    assert f'id="msg-{reply_id}-steps" open' not in final  # folded once the reply has ended
    page = alice.get(f"/chat/{sid}").text
    assert f'id="msg-{reply_id}-step-2"' in page and "Writing the reply." in page


# ---- the page stream ------------------------------------------------------------------------------


def test_the_page_stream_sends_each_step_once_and_deletes_what_the_bound_drops(monkeypatch):
    monkeypatch.setattr(run_events, "MAX_STEPS", 3)
    state, sent = ReplyState(), TimelineSent()
    state.apply(step(1, "planning", "one", stamp()))
    assert sent.whole(state) == {"steps_first": 1}
    assert sent.delta(state, None) == {}  # nothing new: nothing to send
    state.apply(step(2, "executing", "two", stamp()))
    changes = sent.delta(state, None)
    assert [s.number for s in changes["new_steps"]] == [2] and list(changes["drop_steps"]) == []
    assert changes["steps_count"] == 2 and changes["progress_oob"]
    for seq in (3, 4):
        state.apply(step(seq, "executing", str(seq), stamp()))
    changes = sent.delta(state, None)
    assert [s.number for s in changes["new_steps"]] == [3, 4] and list(changes["drop_steps"]) == [1]
    assert "steps_replace" not in changes
    for seq in range(5, 11):  # more new steps than are kept: the list is replaced
        state.apply(step(seq, "executing", str(seq), stamp()))
    changes = sent.delta(state, None)
    assert changes["steps_replace"] and [s.number for s in changes["new_steps"]] == [8, 9, 10]


def test_a_live_page_stream_appends_steps_and_updates_the_progress_line(app, alice):
    sid, (_, reply_id) = make_session(app, "alice", turns=(("user", "hi", "complete"), ("assistant", "", "pending")))
    fake = FakeRun(app, sid, reply_id, [], delay=0.0)
    script = [("status_update", {"status": "planning", "detail": "Reading.", "at": stamp()})]
    script += [("token", {"text": f"w{i} ", "at": stamp()}) for i in range(3)]
    script += [("status_update", {"status": "executing", "detail": "Writing, step two.", "at": stamp()})]

    def feed():
        time.sleep(0.05)
        for type_, data in script:
            fake._publish(type_, data)
            time.sleep(0.25)
        fake._publish("usage", {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4})
        fake._publish("done", {"status": "complete", "message_id": reply_id})

    fake.thread = threading.Thread(target=feed, daemon=True)
    fake.start()
    try:
        messages, _ = sse_messages(alice.get(f"/chat/{sid}/stream?message_id={reply_id}", buffered=False))
    finally:
        fake.close()
    live, final = [m.data for m in messages[:-1]], messages[-1].data
    assert f'id="msg-{reply_id}-progress"' in live[0] and f'id="msg-{reply_id}-steps" open' in live[0]
    assert any(f'id="msg-{reply_id}-steps-list" hx-swap-oob="beforeend"' in html for html in live)
    assert any(f'id="msg-{reply_id}-progress" data-started=' in html and "outerHTML" in html for html in live)
    assert sum(html.count("Writing, step two.") for html in live) == 1  # each step is sent once
    assert "Reading." in final and "Writing, step two." in final and f'id="msg-{reply_id}-progress"' not in final


# ---- the live progress line -----------------------------------------------------------------------


def test_the_progress_line_gives_elapsed_time_and_a_stall_notice_from_server_times(app):
    now = utcnow()
    view = MessageView(
        id="m",
        role="assistant",
        content="",
        status="executing",
        created_at=now - timedelta(seconds=75),
        last_output_at=stamp((now - timedelta(seconds=20)).replace(tzinfo=timezone.utc)),
    )
    with app.test_request_context():
        line = progress_view(view)
        assert line.elapsed.startswith("Working · 1 min 1") and line.stall_after == 15
        assert line.stalled_for in ("No output for 20 s", "No output for 21 s")
        assert line.started.endswith("Z") and line.now.endswith("Z")
        fresh = progress_view(MessageView(id="m", role="assistant", content="", status="streaming", created_at=now))
        assert fresh.stalled_for is None and fresh.last_output == fresh.started
        waiting = progress_view(
            MessageView(
                id="m", role="assistant", content="", status="awaiting_approval", created_at=now - timedelta(seconds=60)
            )
        )
        assert waiting.stalled_for is None  # waiting for a person is not a stall


# ---- export and import --------------------------------------------------------------------------


def test_the_timeline_survives_export_import_export(app, alice, finished_reply):
    from .test_sessions_transfer import without_changing_parts

    sid, _ = finished_reply
    first = alice.get(f"/api/chat/sessions/{sid}/export", query_string={"format": "json"}).json
    response = alice.post("/api/chat/sessions/import", json=first)
    assert response.status_code == 201, response.text
    new_sid = response.json["session_id"]
    second = alice.get(f"/api/chat/sessions/{new_sid}/export", query_string={"format": "json"}).json
    assert without_changing_parts(second) == without_changing_parts(first)
    assert [(s["status"], s["detail"]) for s in second["messages"][1]["steps"]] == STEPS
    assert "Writing the reply." in alice.get(f"/sessions/{new_sid}").text  # the review shows the imported one


@pytest.mark.parametrize(
    "steps, fragment",
    [
        ("planning", "messages[1].steps must be a list"),
        ([{"status": "planning", "detail": "x", "at": None, "extra": 1}], "must be an object with status"),
        ([{"status": "", "detail": None}], "messages[1].steps[0].status must not be empty"),
        ([{"status": "planning", "detail": "x" * (MAX_DETAIL_CHARS + 1)}], "steps[0].detail is 2,001 characters"),
        ([{"status": "planning", "at": "yesterday"}], "messages[1].steps[0].at"),
        ([{"status": "planning"}] * 201, "has 201 steps; at most 200"),
    ],
)
def test_an_import_with_a_bad_timeline_is_refused(app, alice, finished_reply, steps, fragment):
    sid, _ = finished_reply
    document = alice.get(f"/api/chat/sessions/{sid}/export", query_string={"format": "json"}).json
    document["messages"][1]["steps"] = steps
    response = alice.post("/api/chat/sessions/import", json=document)
    assert response.status_code == 422 and fragment in response.json["message"], response.json
    document["messages"][1]["steps"] = []
    document["messages"][0]["steps"] = [{"status": "planning"}]
    response = alice.post("/api/chat/sessions/import", json=document)
    assert response.status_code == 422 and "only replies (role assistant) have steps" in response.json["message"]
