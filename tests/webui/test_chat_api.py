"""The chat API's rules, with the Flask test client: validation, the agent lock, one run at a time,
ownership, and recovery of runs left live by a dead process. (Streaming against real agents and
gunicorn is in tests/relay/.)"""

from __future__ import annotations

import json
import time
from datetime import timedelta

from sqlalchemy import select

from services.webui.extensions import db
from services.webui.models import ConversationSession, Message, Run, utcnow
from services.webui.runs import manager as manager_module
from services.webui.runs import recovery, run_manager
from services.webui.runs.driver import SEQ_HEADROOM


def send(client, **body):
    body.setdefault("agent_id", "architect")
    body.setdefault("content", "Hello there")
    return client.post("/api/chat/message", json=body)


def wait_final(app, message_id, timeout=10.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            message = db.session.get(Message, message_id)
            if message.status in ("complete", "cancelled", "error", "interrupted"):
                return message
        time.sleep(0.05)
    raise AssertionError("reply did not end")


def test_agents_and_models_are_listed_with_status_and_prices(alice):
    agents = alice.get("/api/agents").json["agents"]
    assert [a["agent_id"] for a in agents] == ["architect", "dir-code"]
    assert agents[1]["parent_role"] == "architect"
    assert all(a["status"] == "down" and a["reason"] for a in agents)
    models = alice.get("/api/models?agent_id=dir-code").json["models"]
    assert {m["model_id"] for m in models} == {"ref-standard", "ref-fast"}
    assert all({"context_window", "cost_per_1m_input", "cost_per_1m_output"} <= m.keys() for m in models)
    assert alice.get("/api/models?agent_id=nope").status_code == 404


def test_send_saves_the_user_message_and_answers_202_with_the_stream_url(app, alice):
    response = send(alice, content="What is the plan?", model_id="ref-fast")
    assert response.status_code == 202
    body = response.json
    assert body["stream_url"] == f"/api/chat/stream/{body['session_id']}"
    with app.app_context():
        session = db.session.get(ConversationSession, body["session_id"])
        assert session.title == "What is the plan?" and session.model_id == "ref-fast"
        user_message = db.session.get(Message, body["user_message_id"])
        assert user_message.content == "What is the plan?" and user_message.role == "user"
    # Nothing listens on the agent's port: the reply ends as an error a person can read.
    reply = wait_final(app, body["message_id"])
    assert reply.status == "error" and "architect" in reply.error and "not answering" in reply.error


def test_unknown_agent_is_404_and_unserved_model_is_422(alice):
    assert send(alice, agent_id="no-such-agent").status_code == 404
    response = send(alice, model_id="gpt-imaginary")
    assert response.status_code == 422 and "gpt-imaginary" in response.json["message"]


def test_empty_and_overlong_messages_are_refused_with_a_message(app, alice):
    assert send(alice, content="   ").status_code == 422
    too_long = "x" * (app.config["MAX_MESSAGE_CHARS"] + 1)
    response = send(alice, content=too_long)
    assert response.status_code == 422 and "limit" in response.json["message"]
    assert alice.post("/api/chat/message", data="[]", content_type="application/json").status_code == 400
    assert alice.post("/api/chat/message", data="a=b").status_code == 415


def test_a_session_keeps_its_agent_for_life(app, alice):
    first = send(alice).json
    wait_final(app, first["message_id"])
    other = send(alice, agent_id="dir-code", session_id=first["session_id"])
    assert other.status_code == 409 and "new chat" in other.json["message"]
    same = send(alice, session_id=first["session_id"], model_id="ref-fast")
    assert same.status_code == 202 and same.json["session_id"] == first["session_id"]


def test_one_run_at_a_time_per_session(app, alice):
    first = send(alice).json
    wait_final(app, first["message_id"])
    with app.app_context():  # hold the session as if a run were live
        session = db.session.get(ConversationSession, first["session_id"])
        assert session.active_run_id is None  # the ended run released it
        session.active_run_id = first["message_id"]
        db.session.commit()
    second = send(alice, session_id=first["session_id"])
    assert second.status_code == 409 and "still being written" in second.json["message"]


def test_foreign_sessions_are_404_for_send_stream_and_cancel(app, alice, bob):
    session_id = send(alice).json["session_id"]
    assert send(bob, session_id=session_id).status_code == 404
    assert bob.get(f"/api/chat/stream/{session_id}").status_code == 404
    assert bob.post(f"/api/chat/sessions/{session_id}/cancel").status_code == 404


def test_cancelling_a_finished_run_answers_its_final_state(app, alice):
    sent = send(alice).json
    reply = wait_final(app, sent["message_id"])
    response = alice.post(f"/api/chat/sessions/{sent['session_id']}/cancel")
    assert response.status_code == 200 and response.json["status"] == reply.status
    assert wait_final(app, sent["message_id"]).status == reply.status


def test_an_ended_run_replays_its_whole_grammar(app, alice):
    sent = send(alice).json
    wait_final(app, sent["message_id"])
    stream = alice.get(sent["stream_url"])
    assert stream.mimetype == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-cache" and stream.headers["X-Accel-Buffering"] == "no"
    events = [line.split(": ", 1)[1] for line in stream.text.splitlines() if line.startswith("event: ")]
    assert events[-2:] == ["usage", "done"] and events.count("usage") == 1


def send_streaming(client, **body):
    """A send whose answer is the reply's stream, left unread (as by a client that went away)."""
    body.setdefault("agent_id", "architect")
    body.setdefault("content", "Hello there")
    return client.post("/api/chat/message", json=body, headers={"Accept": "text/event-stream"}, buffered=False)


def test_a_streamed_send_whose_client_left_before_the_first_chunk_still_reaches_the_agent(app, alice, monkeypatch):
    # Such a send leaves the agent's request until its headers are out (RunManager.launch_later);
    # with housekeeping's fallback out of reach, only the response's close can launch it here.
    monkeypatch.setattr(manager_module, "LAUNCH_LATER_SECONDS", 3600.0)
    response = send_streaming(alice)
    assert response.status_code == 200
    message_id = response.headers["X-Message-Id"]
    response.close()  # what the server does when the client is gone before the body starts
    reply = wait_final(app, message_id)
    # Nothing listens on the agent's port: the reply ends as an error a person can read.
    assert reply.status == "error" and "not answering" in reply.error


def test_a_launch_left_to_a_request_that_never_made_it_is_done_by_housekeeping(app, alice, monkeypatch, caplog):
    monkeypatch.setattr(manager_module, "LAUNCH_LATER_SECONDS", 0.0)
    response = send_streaming(alice)  # neither read nor closed
    message_id = response.headers["X-Message-Id"]
    reply = wait_final(app, message_id)
    assert reply.status == "error" and "not answering" in reply.error
    assert f"run {message_id} was launched by housekeeping" in caplog.text
    response.close()  # launches nothing a second time
    assert not run_manager(app).is_driving(message_id)


def test_a_graceful_stop_ends_a_reply_whose_launch_was_still_left_to_its_request(app, alice, monkeypatch):
    monkeypatch.setattr(manager_module, "LAUNCH_LATER_SECONDS", 3600.0)
    response = send_streaming(alice)  # neither read nor closed when the server stops
    run_manager(app).shutdown(timeout=2.0)
    reply = wait_final(app, response.headers["X-Message-Id"])
    assert reply.status in ("interrupted", "error") and reply.error


def test_start_up_marks_runs_of_dead_processes_interrupted(app, alice, app_config):
    from services.webui import create_app

    sent = send(alice).json
    wait_final(app, sent["message_id"])
    # The run becomes another process's: no process here holds its events, so whichever ends it
    # (this app's housekeeping or the new one's start-up) keeps the stored text.
    run_manager(app).bus.drop(sent["message_id"])
    with app.app_context():
        reply = db.session.get(Message, sent["message_id"])
        reply.status, reply.content, reply.error, reply.completed_at = "streaming", "Half a repl", None, None
        run = db.session.get(Run, sent["message_id"])
        run.ended_at, run.owner, run.beat_at = None, "other-host:1", utcnow() - timedelta(hours=1)
        db.session.get(ConversationSession, sent["session_id"]).active_run_id = sent["message_id"]
        db.session.commit()
    create_app(app_config)  # a new process starting up
    with app.app_context():
        reply = db.session.get(Message, sent["message_id"])
        assert reply.status == "interrupted" and reply.content == "Half a repl"
        assert db.session.get(ConversationSession, sent["session_id"]).active_run_id is None
    events = [line for line in alice.get(sent["stream_url"]).text.splitlines() if line.startswith("event: ")]
    assert events[-1] == "event: done"


def test_live_runs_of_this_process_are_not_taken_for_orphans(app):
    owner = run_manager(app).owner
    row = type(
        "Row", (), {"ended_at": None, "owner": owner, "message_id": "m1", "beat_at": utcnow(), "created_at": utcnow()}
    )
    assert not recovery.is_orphan(row, owner, {"m1"}, 30)
    assert recovery.is_orphan(row, owner, set(), 30)  # same process, not driving it: the driver died
    row.owner, row.beat_at = "other-host:1", utcnow() - timedelta(seconds=31)
    assert recovery.is_orphan(row, owner, set(), 30)  # another process that stopped beating
    row.beat_at = utcnow()
    assert not recovery.is_orphan(row, owner, set(), 30)


def sse_events(text):
    """[(id, event, data)] of an SSE body."""
    events, current = [], {}
    for line in text.splitlines() + [""]:
        if not line:
            if "event" in current:
                events.append((int(current["id"]), current["event"], json.loads(current["data"])))
            current = {}
        elif not line.startswith((":", "retry")):
            field, _, value = line.partition(": ")
            current[field] = value
    return events


def test_an_ended_run_whose_events_are_gone_replays_from_the_stored_reply(app, alice):
    sent = send(alice).json
    wait_final(app, sent["message_id"])
    with app.app_context():
        reply = db.session.get(Message, sent["message_id"])
        reply.content, reply.status, reply.error = "The **whole** reply.", "complete", None
        reply.usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        run = db.session.get(Run, sent["message_id"])
        run.last_seq = 9
        db.session.commit()
    run_manager(app).bus.drop(sent["message_id"])  # the bus's retention is over
    fresh = sse_events(alice.get(sent["stream_url"]).text)
    assert [(seq, kind) for seq, kind, _ in fresh] == [(7, "token"), (8, "usage"), (9, "done")]
    assert fresh[0][2]["text"] == "The **whole** reply." and fresh[1][2]["total_tokens"] == 8
    assert fresh[2][2]["status"] == "complete" and "content" not in fresh[2][2]
    # A client that saw part of it is told the stored text, with ids above what it holds.
    resumed = sse_events(alice.get(sent["stream_url"], headers={"Last-Event-ID": "4"}).text)
    assert [(seq, kind) for seq, kind, _ in resumed] == [(8, "usage"), (9, "done")]
    assert resumed[-1][2]["content"] == "The **whole** reply."
    assert sse_events(alice.get(sent["stream_url"], headers={"Last-Event-ID": "9"}).text) == []


def test_an_orphan_is_ended_with_ids_above_anything_a_client_was_sent(app, alice):
    sent = send(alice).json
    wait_final(app, sent["message_id"])
    with app.app_context():
        reply = db.session.get(Message, sent["message_id"])
        reply.status, reply.content, reply.error, reply.completed_at = "streaming", "Stored part", None, None
        run = db.session.get(Run, sent["message_id"])
        run.ended_at, run.owner, run.beat_at, run.last_seq = (
            None,
            "other-host:1",
            utcnow() - timedelta(hours=1),
            SEQ_HEADROOM + 40,
        )
        db.session.get(ConversationSession, sent["session_id"]).active_run_id = sent["message_id"]
        db.session.commit()
    run_manager(app).bus.drop(sent["message_id"])  # the process that drove it (and its memory) is gone
    # The client saw 57 events (more text than the last flush stored) before its worker died.
    events = sse_events(alice.get(sent["stream_url"], headers={"Last-Event-ID": "57"}).text)
    assert [kind for _, kind, _ in events] == ["usage", "done"]
    assert all(seq > SEQ_HEADROOM + 40 for seq, _, _ in events)
    assert events[-1][2]["status"] == "interrupted" and events[-1][2]["content"] == "Stored part"
    with app.app_context():
        assert db.session.get(Message, sent["message_id"]).status == "interrupted"
        assert db.session.get(ConversationSession, sent["session_id"]).active_run_id is None


def test_stop_on_a_run_nobody_drives_ends_it_at_once(app, alice):
    sent = send(alice).json
    wait_final(app, sent["message_id"])
    with app.app_context():
        reply = db.session.get(Message, sent["message_id"])
        reply.status, reply.content, reply.completed_at = "streaming", "Half", None
        run = db.session.get(Run, sent["message_id"])
        run.ended_at, run.owner, run.beat_at = None, "other-host:1", utcnow()
        run.owner = run_manager(app).owner  # this process, which no longer drives it
        db.session.commit()
    run_manager(app).bus.drop(sent["message_id"])
    response = alice.post(f"/api/chat/sessions/{sent['session_id']}/cancel")
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    with app.app_context():
        reply = db.session.get(Message, sent["message_id"])
        assert (reply.status, reply.content) == ("cancelled", "Half")


def test_a_failed_store_of_the_end_is_retried_and_the_grammar_kept(app, alice, monkeypatch):
    store = run_manager(app).store
    real_write = store.write
    failed = []

    def flaky_write(flushes):
        if any(flush.final for flush in flushes) and not failed:
            failed.append(True)
            raise RuntimeError("the database went away for a moment")
        return real_write(flushes)

    monkeypatch.setattr(store, "write", flaky_write)
    sent = send(alice).json  # nothing listens on the agent's port: usage, then done error
    reply = wait_final(app, sent["message_id"])
    assert failed and reply.status == "error"
    # The end is committed a moment before the store marks itself healthy (another thread).
    deadline = time.monotonic() + 5
    while not store.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.healthy
    events = [kind for _, kind, _ in sse_events(alice.get(sent["stream_url"]).text)]
    assert events == ["usage", "done"]


def test_a_repeated_send_with_the_same_idempotency_key_answers_the_first_time(app, alice, bob):
    first = send(alice, idempotency_key="retry-1")
    again = alice.post(
        "/api/chat/message",
        json={"agent_id": "architect", "content": "Hello there"},
        headers={"Idempotency-Key": "retry-1"},
    )
    assert first.status_code == again.status_code == 202
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    other = send(bob, idempotency_key="retry-1")  # keys are per user
    assert other.json["session_id"] != first.json["session_id"]
    with app.app_context():
        users = db.session.scalars(select(Message).where(Message.role == "user")).all()
        assert len(users) == 2
    # Sends without a key are never taken for repeats (two in one session, each its own turn).
    in_session = send(bob).json
    wait_final(app, in_session["message_id"])
    follow_up = send(bob, session_id=in_session["session_id"])
    wait_final(app, follow_up.json["message_id"])
    assert send(bob, session_id=in_session["session_id"]).status_code == 202
    with app.app_context():
        from services.webui.models import IdempotencyKey

        assert {row.key for row in db.session.scalars(select(IdempotencyKey))} == {"retry-1"}
    assert send(alice, idempotency_key="x" * 129).status_code == 400
    assert send(alice, idempotency_key="tab\there").status_code == 400


def test_a_locked_database_answers_a_send_with_503_and_retry_after(app_config, make_user):
    import sqlite3

    from services.webui import create_app

    from ..support import UserClient

    make_user("alice")
    app = create_app({**app_config, "DATABASE_WRITE_WAIT_SECONDS": 0.3})
    alice = UserClient(app, "alice", "correct horse battery")
    holder = sqlite3.connect(app_config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        response = send(alice, content="Saved later, not lost silently")
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "busy" in response.json["message"] and "nothing was saved" in response.json["message"]
    assert 0.25 <= waited < 3
    with app.app_context():
        assert db.session.scalar(select(Message).where(Message.content == "Saved later, not lost silently")) is None
    assert send(alice).status_code == 202  # and the next send goes through


def test_a_run_whose_driver_cannot_store_its_end_is_ended_by_recovery(app_config, make_user, monkeypatch):
    from services.webui import create_app

    from ..support import UserClient

    make_user("alice")
    app = create_app({**app_config, "RUN_STALE_SECONDS": 1.0})
    alice = UserClient(app, "alice", "correct horse battery")
    store = run_manager(app).store
    real_write = store.write

    def no_final_writes(flushes):  # the driver's end never gets stored...
        if any(flush.final for flush in flushes):
            raise RuntimeError("database or disk is full")
        return real_write(flushes)

    monkeypatch.setattr(store, "write", no_final_writes)
    sent = send(alice).json
    reply = wait_final(app, sent["message_id"], timeout=15)  # ...so recovery ends it
    assert reply.status == "interrupted"
    events = sse_events(alice.get(sent["stream_url"]).text)
    assert [kind for _, kind, _ in events][-2:] == ["usage", "done"] and events[-1][2]["status"] == "interrupted"
    assert not run_manager(app).is_driving(sent["message_id"])


def test_database_errors_that_mean_try_again_are_503_not_500():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from services.webui.database import DatabaseUnavailable, unavailable_from

    full = unavailable_from(OperationalError("INSERT …", {}, sqlite3.OperationalError("database or disk is full")))
    locked = unavailable_from(OperationalError("INSERT …", {}, sqlite3.OperationalError("database is locked")))
    assert isinstance(full, DatabaseUnavailable) and full.status == 503 and "disk is full" in full.message
    assert isinstance(locked, DatabaseUnavailable) and "busy" in locked.message
    assert unavailable_from(OperationalError("SELECT …", {}, sqlite3.OperationalError("no such table: x"))) is None
    assert unavailable_from(ValueError("nothing to do with the database")) is None


def test_more_than_one_worker_without_redis_is_refused_with_a_sentence():
    import subprocess
    import sys
    from pathlib import Path

    from services.webui.config import ConfigError, web_workers

    assert web_workers({}) == 1 and web_workers({"WEB_WORKERS": "4", "REDIS_URL": "redis://127.0.0.1:6379/0"}) == 4
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "", "WEB_WORKERS": "2", "PORT": "0"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "--check-config", "wsgi:app"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WEB_WORKERS=2 needs REDIS_URL" in result.stderr and "one worker" in result.stderr
    try:
        web_workers({"WEB_WORKERS": "3"})
    except ConfigError as error:
        assert "REDIS_URL" in str(error)
    else:
        raise AssertionError("three workers without Redis were accepted")
