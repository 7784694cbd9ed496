"""Replaying a run to a subscriber: its events after Last-Event-ID, then live ones until `done`.

A run driven by this process is followed in memory (pushed, no polling); one driven elsewhere is
followed through its event log in the database. Both give the same sequence numbers, so a client
can reconnect to any worker and get exactly the events it missed.
"""
from __future__ import annotations

import json
import time

from sqlalchemy import select

from ..extensions import db
from ..models import Message
from .recovery import is_orphan, mark_interrupted
from .runs import LiveRun, StreamEvent, _live, events_table, runs_table

REMOTE_POLL_SECONDS = 0.2


def subscribe(app, message_id: str, after_seq: int, heartbeat: float):
    """Yield the run's events after `after_seq`, then live ones until `done`; None = heartbeat due.

    Never holds a database connection across a yield.
    """
    run = _live.get(message_id)
    if run is not None:
        yield from _subscribe_local(run, after_seq, heartbeat)
    else:
        yield from _subscribe_stored(app, message_id, after_seq, heartbeat)


def _subscribe_local(run: LiveRun, after_seq: int, heartbeat: float):
    sent = after_seq
    while True:
        with run.changed:
            if len(run.events) <= sent and not run.finished:
                run.changed.wait(timeout=heartbeat)
            pending = run.events[sent:]
        if not pending:
            yield None
            continue
        for event in pending:
            yield event
            sent = event.seq
            if event.type == "done":
                return


def _subscribe_stored(app, message_id: str, after_seq: int, heartbeat: float):
    sent = after_seq
    quiet_since = time.monotonic()
    while True:
        with app.app_context():
            with db.engine.connect() as conn:
                run_row = conn.execute(select(runs_table).where(runs_table.c.message_id == message_id)).first()
                rows = conn.execute(
                    select(events_table.c.seq, events_table.c.type, events_table.c.data)
                    .where(events_table.c.run_id == message_id, events_table.c.seq > sent)
                    .order_by(events_table.c.seq)
                ).all()
            if run_row is None:
                return
            if not rows and run_row.ended_at is not None:
                yield from _synthesized_replay(message_id, run_row, sent)
                return
            if not rows and is_orphan(run_row, app.config["RUN_STALE_SECONDS"]):
                mark_interrupted([message_id])
                continue
        for seq, type_, data in rows:
            yield StreamEvent(seq, type_, json.loads(data))
            sent = seq
            quiet_since = time.monotonic()
            if type_ == "done":
                return
        # A run driven in this process may have started since we looked: switch to its memory.
        run = _live.get(message_id)
        if run is not None:
            yield from _subscribe_local(run, sent, heartbeat)
            return
        if time.monotonic() - quiet_since >= heartbeat:
            quiet_since = time.monotonic()
            yield None
        time.sleep(min(REMOTE_POLL_SECONDS, heartbeat))


def _synthesized_replay(message_id: str, run_row, sent: int):
    """An ended run whose event log was purged: the whole reply as one token, usage, done."""
    message = db.session.get(Message, message_id)
    db.session.remove()
    if message is None:
        return
    last = run_row.last_seq
    if sent < last - 2 or sent == 0:
        if message.content:
            yield StreamEvent(max(last - 2, 1), "token", {"text": message.content})
        yield StreamEvent(max(last - 1, 2), "usage", message.usage or {})
    done = {"status": message.status, "message_id": message_id}
    if message.error:
        done["error"] = message.error
    yield StreamEvent(max(last, 3), "done", done)
