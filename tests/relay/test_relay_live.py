"""The relay end to end: real reference agents, real gunicorn (gevent workers), a real SQLite file,
in the scale-out profile: two gunicorn servers (two workers each) sharing one database and one
real redis-server, as two hosts would.

The stream is read with sseclient-py, an SSE client independent of ours. "Another host" is made
deterministic by the second gunicorn: a request there can never land on the process that drives
the run, so its events must come through Redis.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest
import requests
import sseclient

from services.webui.chat import tokens

from ..redis_server import redis_server
from ..servers import LiveStack
from ..support import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    extra = [{"agent_id": "dir-ops", "parent_role": "architect", "name": "Ops Director", "port": 0}]
    from ..support import free_port

    extra[0]["port"] = free_port()  # nothing listens there: the agent is down
    with redis_server() as redis_url:
        with LiveStack(tmp_path_factory.mktemp("relay"), workers=2, extra_agents=extra, redis_url=redis_url) as stack:
            stack.other_url = stack.start_extra_server()
            yield stack


@pytest.fixture(scope="module")
def api(stack):
    return stack.login()


def send(api, content, agent_id="dir-code", **extra):
    response = api.post("/api/chat/message", json={"agent_id": agent_id, "content": content, **extra})
    assert response.status_code == 202, response.text
    return response.json()


def open_stream(api, url, last_event_id=None, base=None):
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = api.get((base or "") + url, headers=headers, stream=True, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


def read_events(api, url, last_event_id=None, limit=None, base=None):
    response = open_stream(api, url, last_event_id, base)
    events = []
    try:
        for event in sseclient.SSEClient(response).events():
            events.append(event)
            if event.event == "done" or (limit and len(events) >= limit):
                break
    finally:
        response.close()
    return events


def assert_grammar(events):
    kinds = [e.event for e in events]
    assert kinds[-1] == "done", kinds
    assert kinds.count("done") == 1 and kinds.count("usage") == 1
    assert kinds[-2] == "usage"
    assert set(kinds[:-2]) <= {"token", "status_update"}
    seqs = [int(e.id) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def text_of(events):
    return "".join(json.loads(e.data)["text"] for e in events if e.event == "token")


def db_row(stack, message_id):
    with sqlite3.connect(stack.db_path) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()


def agent_task(stack, agent_id, task_id):
    return requests.get(f"{stack.agent_url(agent_id)}/tasks/{task_id}", timeout=5).json()


def test_event_order_tokens_then_one_usage_then_done(stack, api):
    sent = send(api, "Plan the data migration @@tokens=30 @@delay_ms=10")
    events = read_events(api, sent["stream_url"])
    assert_grammar(events)
    kinds = [e.event for e in events]
    # a busy worker may hand several of the agent's tokens on as one event: compare the text
    task = agent_task(stack, "dir-code", sent["message_id"])
    assert task["tokens_sent"] == 30 and len(text_of(events)) == task["chars_sent"] and "status_update" in kinds
    done = json.loads(events[-1].data)
    assert done["status"] == "complete" and done["message_id"] == sent["message_id"]
    usage = json.loads(events[-2].data)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    row = wait_for(lambda: (r := db_row(stack, sent["message_id"])) and r["status"] == "complete" and r)
    assert row["content"] == text_of(events)


def test_a_finished_reply_is_stored_with_its_token_count(stack, api):
    # Counted off the serving thread with the reply's end, as the context plan counts it: the
    # plan after a reply then finds the count instead of counting and writing it itself.
    sent = send(api, "Count me @@tokens=25 @@delay_ms=0")
    read_events(api, sent["stream_url"])
    row = wait_for(lambda: (r := db_row(stack, sent["message_id"])) and r["status"] == "complete" and r)
    plan = api.get(f"/api/chat/sessions/{sent['session_id']}/context").json()
    counter = tokens.Tokenizers().counter(plan["tokenizer"])
    assert row["token_counter"] == plan["tokenizer"]
    assert row["token_count"] == counter.message_tokens(row["content"]) > tokens.MESSAGE_OVERHEAD_TOKENS


def test_the_housekeeping_indexes_a_send_for_search_without_any_search(stack, api):
    # The send only queues its title and message for the full-text index (migration 0013), so
    # that FTS5's write is not on its way to the agent; a worker's housekeeping indexes them.
    sent = send(api, "Where do ptarmigans nest in winter @@tokens=5 @@delay_ms=0")
    reply_word = re.findall(r"[a-z]{4,}", text_of(read_events(api, sent["stream_url"])).lower())[0]

    def indexed():
        with sqlite3.connect(stack.db_path) as conn:
            if conn.execute("SELECT count(*) FROM search_backlog").fetchone()[0]:
                return None
            doc = "(SELECT doc_id FROM search_message_docs WHERE message_id = ?)"
            return (
                conn.execute("SELECT count(*) FROM search_titles('ptarmigans')").fetchone()[0],
                conn.execute("SELECT count(*) FROM search_messages('ptarmigans')").fetchone()[0],
                conn.execute(
                    f"SELECT count(*) FROM search_messages(?) WHERE rowid = {doc}", (reply_word, sent["message_id"])
                ).fetchone()[0],
            )

    assert wait_for(indexed, timeout=10) == (1, 1, 1)  # the title, the question, the reply


def test_heartbeat_comment_during_a_stall(api):
    sent = send(api, "Think hard @@tokens=4 @@stall_after=2 @@stall_ms=2500 @@delay_ms=5")
    response = open_stream(api, sent["stream_url"])
    raw = b""
    try:
        for chunk in response.iter_content(chunk_size=None):
            raw += chunk
            if b"event: done" in raw:
                break
    finally:
        response.close()
    text = raw.decode()
    # The keep-alive comes between the second and third token, while the agent says nothing.
    stall = text.split('"text"')
    assert ":keep-alive" in "".join(stall[2:])
    assert text.count(":keep-alive") >= 2


def test_reconnect_with_last_event_id_gives_exactly_the_missing_events(stack, api):
    sent = send(api, "Explain the design @@tokens=40 @@delay_ms=25")
    first = read_events(api, sent["stream_url"], limit=8)
    resumed = read_events(api, sent["stream_url"], last_event_id=first[-1].id)
    complete = read_events(api, sent["stream_url"])  # an independent full replay
    combined = first + resumed
    assert [e.id for e in combined] == [e.id for e in complete]
    assert [e.data for e in combined] == [e.data for e in complete]
    assert_grammar(combined)


def test_reconnect_on_another_worker_resumes_without_gaps_or_duplicates(stack, api):
    sent = send(api, "Walk through the rollout @@tokens=60 @@delay_ms=20")
    first = read_events(api, sent["stream_url"], limit=10)
    # The other server never runs this stream: it replays from the shared event log.
    resumed = read_events(api, sent["stream_url"], last_event_id=first[-1].id, base=stack.other_url)
    combined = first + resumed
    assert_grammar(combined)
    assert [int(e.id) for e in combined] == list(range(1, len(combined) + 1))
    assert text_of(combined) == db_row(stack, sent["message_id"])["content"]


def test_two_subscribers_see_the_same_events(stack, api):
    import threading

    sent = send(api, "Summarise the incident @@tokens=25 @@delay_ms=20")
    results = {}

    def subscribe(name, base):
        results[name] = read_events(api, sent["stream_url"], base=base)

    threads = [
        threading.Thread(target=subscribe, args=("a", None)),
        threading.Thread(target=subscribe, args=("b", stack.other_url)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [(e.id, e.event, e.data) for e in results["a"]] == [(e.id, e.event, e.data) for e in results["b"]]
    assert_grammar(results["a"])


def test_stop_mid_stream_cancels_the_agent_task_and_keeps_the_text(stack, api):
    sent = send(api, "Write a long report @@tokens=400 @@delay_ms=20")
    first = read_events(api, sent["stream_url"], limit=12)
    assert api.post(f"/api/chat/sessions/{sent['session_id']}/cancel").status_code == 202
    rest = read_events(api, sent["stream_url"], last_event_id=first[-1].id)
    events = first + rest
    assert_grammar(events)
    assert json.loads(events[-1].data)["status"] == "cancelled"
    task = agent_task(stack, "dir-code", sent["message_id"])
    assert task["status"] == "cancelled" and task["tokens_sent"] < 400
    time.sleep(0.3)  # the agent confirms it stopped: no more tokens after the cancel
    assert agent_task(stack, "dir-code", sent["message_id"])["tokens_sent"] == task["tokens_sent"]
    row = wait_for(lambda: (r := db_row(stack, sent["message_id"])) and r["status"] == "cancelled" and r)
    assert row["content"] and row["content"] == text_of(events)


def test_stop_before_the_first_token(stack, api):
    sent = send(api, "Take your time @@first_token_ms=5000")
    wait_for(lambda: agent_task(stack, "dir-code", sent["message_id"]).get("status") == "running")
    assert api.post(f"/api/chat/sessions/{sent['session_id']}/cancel").status_code == 202
    events = read_events(api, sent["stream_url"])
    assert_grammar(events)
    assert json.loads(events[-1].data)["status"] == "cancelled" and text_of(events) == ""
    assert agent_task(stack, "dir-code", sent["message_id"])["tokens_sent"] == 0


def test_stop_handled_by_another_worker(stack, api):
    sent = send(api, "Long analysis @@tokens=400 @@delay_ms=20")
    read_events(api, sent["stream_url"], limit=5)
    other = requests.Session()
    other.cookies.update(api.cookies)
    other.headers.update(api.headers)
    response = other.post(f"{stack.other_url}/api/chat/sessions/{sent['session_id']}/cancel")
    assert response.status_code == 202
    events = read_events(api, sent["stream_url"])
    assert json.loads(events[-1].data)["status"] == "cancelled"
    assert agent_task(stack, "dir-code", sent["message_id"])["status"] == "cancelled"


def test_agent_crash_ends_interrupted_with_the_text_kept(stack, api):
    sent = send(api, "Go @@tokens=30 @@crash_after=10 @@delay_ms=10")
    events = read_events(api, sent["stream_url"])
    assert_grammar(events)
    assert json.loads(events[-1].data)["status"] == "interrupted"
    row = wait_for(lambda: (r := db_row(stack, sent["message_id"])) and r["status"] == "interrupted" and r)
    assert row["content"] == text_of(events) and len(text_of(events)) > 0


def test_agent_down_ends_error_with_a_sentence(stack, api):
    sent = send(api, "Are you there?", agent_id="dir-ops")
    events = read_events(api, sent["stream_url"])
    assert_grammar(events)
    done = json.loads(events[-1].data)
    assert done["status"] == "error"
    assert done["error"] == f"Agent dir-ops is not answering on its port {stack.agent('dir-ops')['port']}."
    assert db_row(stack, sent["message_id"])["error"] == done["error"]


def test_malformed_lines_are_skipped_and_the_stream_continues(stack, api):
    sent = send(api, "Mixed @@tokens=12 @@malformed=1 @@delay_ms=5")
    events = read_events(api, sent["stream_url"])
    assert_grammar(events)
    task = agent_task(stack, "dir-code", sent["message_id"])
    assert task["tokens_sent"] == 12 and len(text_of(events)) == task["chars_sent"]  # none lost to the bad lines
    assert json.loads(events[-1].data)["status"] == "complete"


def test_unknown_agent_404_and_agent_lock_409(api):
    assert api.post("/api/chat/message", json={"agent_id": "ghost", "content": "hi"}).status_code == 404
    sent = send(api, "hello @@tokens=3")
    read_events(api, sent["stream_url"])
    response = api.post(
        "/api/chat/message", json={"agent_id": "dir-data", "content": "hi", "session_id": sent["session_id"]}
    )
    assert response.status_code == 409


def test_closing_the_browser_does_not_stop_the_run(stack, api):
    sent = send(api, "Background work @@tokens=20 @@delay_ms=20")
    read_events(api, sent["stream_url"], limit=2)  # then the "tab" goes away
    row = wait_for(lambda: (r := db_row(stack, sent["message_id"])) and r["status"] == "complete" and r)
    assert len(row["content"]) > 0
    assert agent_task(stack, "dir-code", sent["message_id"])["tokens_sent"] == 20


def test_post_can_stream_the_reply_directly(api):
    response = api.post(
        "/api/chat/message",
        json={"agent_id": "architect", "content": "Quick one @@tokens=5"},
        headers={"Accept": "text/event-stream"},
        stream=True,
    )
    assert response.status_code == 200 and response.headers["X-Message-Id"]
    events = list(sseclient.SSEClient(response).events())
    assert_grammar(events)


def test_two_hosts_follow_reconnect_and_stop_one_run_without_gap_duplicate_or_late_token(stack, api):
    sent = send(api, "Survey the fleet @@tokens=400 @@delay_ms=15")  # driven by a worker of host A
    on_b = read_events(api, sent["stream_url"], limit=10, base=stack.other_url)
    on_a = read_events(api, sent["stream_url"], last_event_id=on_b[-1].id, limit=10)
    other = requests.Session()  # the stop goes to host B
    other.cookies.update(api.cookies)
    other.headers.update(api.headers)
    assert other.post(f"{stack.other_url}/api/chat/sessions/{sent['session_id']}/cancel").status_code == 202
    rest = read_events(api, sent["stream_url"], last_event_id=on_a[-1].id, base=stack.other_url)
    events = on_b + on_a + rest
    assert_grammar(events)
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert json.loads(events[-1].data)["status"] == "cancelled"
    task = wait_for(lambda: (t := agent_task(stack, "dir-code", sent["message_id"]))["status"] == "cancelled" and t)
    # the client has exactly what the agent sent before it stopped: nothing after the stop, nothing lost
    assert task["tokens_sent"] < 400 and len(text_of(events)) == task["chars_sent"]
    row = wait_for(lambda: (r := db_row(stack, sent["message_id"])) and r["status"] == "cancelled" and r)
    assert row["content"] == text_of(events)


def test_a_retried_send_with_an_idempotency_key_is_answered_once(stack, api):
    body = {"agent_id": "dir-code", "content": "Exactly once @@tokens=3"}
    first = api.post("/api/chat/message", json=body, headers={"Idempotency-Key": "two-hosts-1"})
    again = requests.Session()
    again.cookies.update(api.cookies)
    again.headers.update(api.headers)
    second = again.post(f"{stack.other_url}/api/chat/message", json=body, headers={"Idempotency-Key": "two-hosts-1"})
    assert first.status_code == second.status_code == 202 and first.json() == second.json()
    with sqlite3.connect(stack.db_path) as conn:
        count = conn.execute(
            "SELECT count(*) FROM messages WHERE session_id = ?", (first.json()["session_id"],)
        ).fetchone()[0]
    assert count == 2  # one question, one reply
