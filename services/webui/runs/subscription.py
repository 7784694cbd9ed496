"""Following a run: its events after a client's last one, then live ones until `done`, from the
bus, or from the database when the bus has no log for the run (RunManager.subscribe_batches)."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from . import recovery
from .bus import BusUnavailable

log = logging.getLogger("switchboard.runs")
# While the bus does not answer, a subscriber asks again this often (and keeps its client, with
# heartbeats).
BUS_RETRY_SECONDS = 1.0


def batches(manager, run_id: str, after_seq: int, wait):
    """Yield the run's events after `after_seq`, then live ones until `done`, in the batches
    the bus hands them over.

    `wait()` says how long to wait for the next event; None is yielded each time that
    passes quietly (the caller's cue for a heartbeat or a pending render). The database is
    read only when the bus holds no log for the run (never started here, expired, or past
    its end) or the log has been quiet for RUN_STALE_SECONDS: a quiet stream costs little
    more than its wait, and an orphan's end reaches its subscribers through the bus, from
    whichever worker's housekeeping ends it (or from the database, if the bus was down).
    Holds no database connection across a yield. A bus that does not answer (Redis down)
    is waited for: the client keeps its stream, with heartbeats, and resumes where it was.
    """
    manager.start()
    sent = after_seq
    try:
        end = manager.bus.done_seq(run_id)
    except BusUnavailable:
        end = None  # the reads below find out
    if end is not None and sent >= end:
        return  # this client has the whole run already
    quiet_since = time.monotonic()
    while True:
        try:
            events = manager.bus.read(run_id, sent, wait())
        except BusUnavailable as exc:
            manager.bus_trouble(run_id, exc)
            time.sleep(min(max(wait(), 0.05), BUS_RETRY_SECONDS))
            events = []
        if events is None or (not events and time.monotonic() - quiet_since >= manager.stale_seconds):
            # No log on the bus, or one quiet for long: the database says how the run stands.
            # (An end the bus never got, because it was down as the run ended, is found here.)
            quiet_since = time.monotonic()
            try:
                row = manager.store.run(recovery.run_row, manager.store.engine, run_id)
            except SQLAlchemyError:
                log.warning("run %s: the database cannot be read; its stream waits", run_id)
                time.sleep(max(wait(), 1.0))
                yield None
                continue
            if row is None:
                return
            if row.ended_at is not None:
                # Its events are gone: the stored end.
                replay = recovery.replay_ended(
                    manager.store.run(recovery.stored_reply, manager.store.engine, row.message_id), row, sent
                )
                if replay:
                    yield replay
                return
            if recovery.is_orphan(row, manager.owner, manager._live, manager.stale_seconds):
                manager._end_orphans([row])
                continue
            if events is None:
                # Driven by a process this bus cannot see (a second server without Redis,
                # which the defaults rule out): follow its end, which the database will show.
                time.sleep(max(wait(), 1.0))
            yield None
            continue
        if not events:
            yield None
            continue
        quiet_since = time.monotonic()
        done = next((i for i, event in enumerate(events) if event.type == "done"), None)
        if done is not None:
            yield events[: done + 1]
            return
        yield events
        sent = events[-1].seq
