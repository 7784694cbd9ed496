"""Runs: the server-side owner of an agent's reply.

A run reads the agent's stream through the gateway, appends every event with a sequence number to
an in-memory log (pushed at once to subscribers in this process) and flushes the log, the reply
text and the status to the database at most every RUN_FLUSH_SECONDS, so that a subscriber on
another gunicorn worker, or after a reload, replays exactly what it missed. Closing the browser
does not stop a run; only a cancel does.

Cross-worker coordination goes through the database only: the cancel flag on the run row, the
owner's heartbeat (`beat_at`), and the session's `active_run_id` claim. One watcher thread per
process polls for cancel flags of all its runs in one query and keeps their heartbeat fresh.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import insert, select, update

from services.gateway.client import TaskStream, cancel_task
from services.gateway.registry import Agent

from ..extensions import db
from ..models import FINAL_STATUSES, ConversationSession, Message, Run, RunEvent, utcnow

log = logging.getLogger("switchboard.runs")

OWNER = f"{socket.gethostname()}:{os.getpid()}"
# A native agent gets this long to confirm a cancel before the run closes the upstream itself.
CANCEL_GRACE_SECONDS = 2.0
# How long a request that starts a run waits for the run's request to reach the agent. On
# loopback that takes well under a millisecond; the cap only matters for a slow network.
AGENT_HEAD_START_SECONDS = 0.05
WATCH_INTERVAL_SECONDS = 0.25
BEAT_INTERVAL_SECONDS = 5.0
# Finished runs' event logs older than RUN_EVENT_RETENTION_SECONDS are dropped this often.
PURGE_INTERVAL_SECONDS = 300.0
STATUS_FROM_UPDATE = {"planning", "executing", "awaiting_approval", "streaming"}

runs_table = Run.__table__
events_table = RunEvent.__table__
messages_table = Message.__table__
sessions_table = ConversationSession.__table__


@dataclass
class StreamEvent:
    seq: int
    type: str
    data: dict


@dataclass
class LiveRun:
    """The in-process half of a run that this process drives."""

    message_id: str
    session_id: str
    agent: Agent
    events: list[StreamEvent] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    finished: bool = False
    cancel_deadline: float | None = None
    stream: object = None

    def next_event(self, type_: str, data: dict) -> StreamEvent:
        """The event publish() adds next; only the run's own thread calls these two."""
        return StreamEvent(len(self.events) + 1, type_, data)

    def publish(self, event: StreamEvent) -> None:
        with self.changed:
            self.events.append(event)
            if event.type == "done":
                self.finished = True
            self.changed.notify_all()

    def request_cancel(self) -> None:
        """Stop the agent's work: ask a native agent to cancel, else close the upstream."""
        if self.cancel_deadline is not None or self.finished:
            return
        self.cancel_deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        if self.agent.protocol == "native":
            cancel_task(self.agent, self.message_id)
        else:
            self.cancel_deadline = time.monotonic()
        self.close_if_due()

    def close_if_due(self) -> None:
        if self.cancel_deadline is not None and time.monotonic() >= self.cancel_deadline and self.stream:
            self.stream.close(status="cancelled")


_live: dict[str, LiveRun] = {}
_live_lock = threading.Lock()
_watcher: threading.Thread | None = None
_watcher_lock = threading.Lock()


# ---- starting and driving a run -----------------------------------------------------------------


def prepare_run(agent: Agent, message_id: str, session_id: str) -> LiveRun:
    """Register the run in this process before its rows are committed.

    Registering first means no subscriber in this process can see the committed run row without
    also finding the live run, and mistake it for the orphan of a dead process.
    """
    run = LiveRun(message_id=message_id, session_id=session_id, agent=agent)
    with _live_lock:
        _live[message_id] = run
    return run


def abandon_run(run: LiveRun) -> None:
    with _live_lock:
        _live.pop(run.message_id, None)


def launch_run(app, run: LiveRun, model_id: str, messages: list[dict]) -> None:
    """Send a prepared run, whose Run row is committed, to its agent; drive it in a thread.

    Returns once the agent has the request (or AGENT_HEAD_START_SECONDS passed), so the agent
    works while this request writes its answer: under gevent, the run's greenlets would
    otherwise only get to send it after this request's greenlet yields.
    """
    _ensure_watcher(app)
    config = app.config
    run.stream = TaskStream(
        run.agent,
        task_id=run.message_id,
        session_id=run.session_id,
        model_id=model_id,
        messages=messages,
        connect_timeout=config["AGENT_CONNECT_TIMEOUT"],
        idle_timeout=config["AGENT_IDLE_TIMEOUT"],
        tick=min(config["RUN_FLUSH_SECONDS"], WATCH_INTERVAL_SECONDS),
    )
    # The run's thread first, the request second: starting a thread waits for it, and that
    # wait must not fall between the request's connect and its send.
    threading.Thread(target=_drive, args=(app, run), name=f"run-{run.message_id[:8]}", daemon=True).start()
    try:
        run.stream.start()
    except RuntimeError:  # no thread to be had: end the reply now rather than leave it pending
        log.exception("run %s could not start reading its agent", run.message_id)
        run.stream.close("error", "Switchboard could not start this reply; try again.")
        return
    run.stream.wait_sent(AGENT_HEAD_START_SECONDS)


def _drive(app, run: LiveRun) -> None:
    flush_every = app.config["RUN_FLUSH_SECONDS"]
    text: list[str] = []
    state = {"status": "pending", "usage": None, "error": None}
    unflushed: list[StreamEvent] = []
    last_flush = time.monotonic()
    if run.cancel_deadline is not None:  # cancelled before the stream existed: no grace left
        run.cancel_deadline = time.monotonic()
    try:
        with app.app_context():
            for event in run.stream:
                run.close_if_due()
                if event is not None:
                    data = dict(event.data)
                    if event.type == "done":
                        data["message_id"] = run.message_id
                    stream_event = run.next_event(event.type, data)
                    unflushed.append(stream_event)
                    _apply(event.type, data, text, state)
                    if event.type == "done":
                        # The final state is stored before anyone hears `done`, so a client
                        # that reads the session on `done` finds the finished reply.
                        _flush(run, unflushed, text, state)
                        unflushed = []
                    run.publish(stream_event)
                    # Let subscribers send it now: under gevent this greenlet would otherwise
                    # drain every event already queued before anyone else runs.
                    time.sleep(0)
                now = time.monotonic()
                if unflushed and now - last_flush >= flush_every:
                    _flush(run, unflushed, text, state)
                    unflushed, last_flush = [], now
                if run.finished:
                    break
    except Exception:  # never leave a reply spinning: record what we have as interrupted
        log.exception("run %s failed", run.message_id)
        done = None
        if not run.finished:
            # Keep the grammar whole: drop a `done` that was never published, add usage only if
            # none went out, then one `done`.
            unflushed = [event for event in unflushed if event.seq <= len(run.events)]
            state["status"], state["error"] = "interrupted", "Switchboard lost this reply's stream."
            if not any(event.type == "usage" for event in run.events):
                usage = run.next_event("usage", _usage_so_far(state))
                run.publish(usage)
                unflushed.append(usage)
            done = run.next_event(
                "done", {"status": "interrupted", "error": state["error"], "message_id": run.message_id}
            )
            unflushed.append(done)
        try:
            with app.app_context():
                _flush(run, unflushed, text, state)
        except Exception:
            log.exception("run %s could not record its end", run.message_id)
        if done is not None:
            run.publish(done)
    finally:
        if run.stream is not None:
            run.stream.close(status="cancelled")
        with _live_lock:
            _live.pop(run.message_id, None)


def _apply(type_: str, data: dict, text: list[str], state: dict) -> None:
    if type_ == "token":
        text.append(str(data.get("text", "")))
        if state["status"] == "pending":
            state["status"] = "streaming"
    elif type_ == "status_update":
        if data.get("status") in STATUS_FROM_UPDATE:
            state["status"] = data["status"]
    elif type_ == "usage":
        state["usage"] = data
    elif type_ == "done":
        final = data.get("status")
        state["status"] = final if final in FINAL_STATUSES else "error"
        state["error"] = data.get("error")


def _usage_so_far(state: dict) -> dict:
    return state["usage"] or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _flush(run: LiveRun, events: list[StreamEvent], text: list[str], state: dict) -> None:
    """Write new events, the reply so far and its status in one short transaction."""
    now = utcnow()
    final = state["status"] in FINAL_STATUSES
    message_values = {"content": "".join(text), "status": state["status"]}
    if state["usage"] is not None:
        message_values["usage"] = json.dumps(state["usage"], sort_keys=True)
    if final:
        message_values.update(error=state["error"], completed_at=now)
    with db.engine.begin() as conn:
        if events:
            conn.execute(
                insert(events_table),
                [
                    {"run_id": run.message_id, "seq": e.seq, "type": e.type, "data": json.dumps(e.data), "created_at": now}
                    for e in events
                ],
            )
        conn.execute(update(messages_table).where(messages_table.c.id == run.message_id).values(**message_values))
        run_values = {"last_seq": events[-1].seq if events else len(run.events), "beat_at": now}
        if final:
            run_values["ended_at"] = now
        conn.execute(update(runs_table).where(runs_table.c.message_id == run.message_id).values(**run_values))
        if final:
            conn.execute(
                update(sessions_table)
                .where(sessions_table.c.id == run.session_id, sessions_table.c.active_run_id == run.message_id)
                .values(active_run_id=None, updated_at=now)
            )


# ---- the per-process watcher: cancel flags and heartbeats ---------------------------------------


def _ensure_watcher(app) -> None:
    global _watcher
    with _watcher_lock:
        if _watcher is not None and _watcher.is_alive():
            return
        _watcher = threading.Thread(target=_watch, args=(app,), name="run-watcher", daemon=True)
        _watcher.start()


def _watch(app) -> None:
    last_beat = last_purge = time.monotonic()
    while True:
        time.sleep(WATCH_INTERVAL_SECONDS)
        try:
            if time.monotonic() - last_purge >= PURGE_INTERVAL_SECONDS:
                from .recovery import purge_event_logs  # recovery builds on this module

                with app.app_context():
                    purge_event_logs(app.config["RUN_EVENT_RETENTION_SECONDS"])
                last_purge = time.monotonic()
            if not _live:
                continue
            with app.app_context(), db.engine.begin() as conn:
                flagged = conn.execute(
                    select(runs_table.c.message_id).where(
                        runs_table.c.owner == OWNER,
                        runs_table.c.ended_at.is_(None),
                        runs_table.c.cancel_requested_at.is_not(None),
                    )
                ).scalars().all()
                if time.monotonic() - last_beat >= BEAT_INTERVAL_SECONDS:
                    conn.execute(
                        update(runs_table)
                        .where(runs_table.c.owner == OWNER, runs_table.c.ended_at.is_(None))
                        .values(beat_at=utcnow())
                    )
                    last_beat = time.monotonic()
            for message_id in flagged:
                run = _live.get(message_id)
                if run is not None:
                    run.request_cancel()
            for run in list(_live.values()):
                run.close_if_due()
        except Exception:
            log.exception("run watcher tick failed")


def request_cancel(message_id: str, agent: Agent | None) -> None:
    """Flag the run for cancel; act at once when this process drives it or the agent is native."""
    # On the request's own session: a second pooled connection per request can starve the pool.
    db.session.execute(
        update(runs_table)
        .where(runs_table.c.message_id == message_id, runs_table.c.cancel_requested_at.is_(None))
        .values(cancel_requested_at=utcnow())
    )
    db.session.commit()
    run = _live.get(message_id)
    if run is not None:
        run.request_cancel()
    elif agent is not None and agent.protocol == "native":
        # The agent stops its work now; the owning worker sees `done cancelled` on its stream.
        cancel_task(agent, message_id)
