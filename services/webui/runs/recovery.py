"""Runs whose driver is gone: finding them and ending them with the text kept.

A run's driver is "host:pid" plus a heartbeat (`beat_at`). A run is an orphan when its heartbeat
is stale, when its driver was a process on this host that no longer exists, or when this very
process owns it but no longer drives it (its driver gave up, e.g. it could not store its end).

Ending an orphan must leave a client with exactly the stored reply and event ids above anything
it was sent: when the bus still holds the run's events (Redis, or this process's memory), the
text they add up to is stored; otherwise the stored text is sent to clients inside `done`
(`content`). Closing events are numbered above `runs.last_seq`, which the driver always stored
ahead of what it published.

Also here: the runs table as the housekeeping loop reads and writes it (heartbeats, flagged
stops), and an ended run read back as events for a subscriber whose bus holds no more of it.
All of it runs on the run store's thread (`RunStore.run`), never on the serving thread.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import timedelta

import psutil
from sqlalchemy import and_, delete, select, update

from ..models import LIVE_STATUSES, ConversationSession, IdempotencyKey, Message, Run, usage_columns, utcnow
from .events import ReplyState, StreamEvent, load_steps, zero_usage

runs_table = Run.__table__
messages_table = Message.__table__
sessions_table = ConversationSession.__table__

INTERRUPTED = "The server stopped while this reply was being written; the text so far is kept."
STOPPED = "Stopped. The text so far is kept."
IDEMPOTENCY_RETENTION = timedelta(hours=24)


def is_orphan(run_row, owner: str, driving: set[str] | dict, stale_seconds: float) -> bool:
    if run_row.ended_at is not None:
        return False
    if run_row.owner == owner:
        return run_row.message_id not in driving
    beat = run_row.beat_at or run_row.created_at
    if beat < utcnow() - timedelta(seconds=stale_seconds):
        return True
    host, _, pid = (run_row.owner or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


@dataclass(frozen=True)
class Ending:
    """How an orphan was ended: the events to publish after the stored end."""

    run_id: str
    events: list[StreamEvent]


def end_run(conn, run_id: str, bus_events: list[StreamEvent], status: str, error: str) -> Ending | None:
    """End one run in `conn`'s transaction; None when someone else ended it first."""
    now = utcnow()
    row = conn.execute(select(runs_table).where(runs_table.c.message_id == run_id)).first()
    if row is None or row.ended_at is not None:
        return None
    message = conn.execute(
        select(
            messages_table.c.content, messages_table.c.usage, messages_table.c.session_id, messages_table.c.steps
        ).where(messages_table.c.id == run_id)
    ).first()
    state = ReplyState()
    for event in bus_events:
        state.apply(event)
    seq = max(row.last_seq, state.seq)
    values = {"status": status, "error": error, "completed_at": now}
    done = {"status": status, "error": error, "message_id": run_id}
    if bus_events:
        # The bus has every event a client can have seen: store what they add up to.
        values["content"] = state.text
        if state.usage is not None:
            values["usage"] = json.dumps(state.usage, sort_keys=True)
            values.update(usage_columns(state.usage))
        if state.steps_seen:
            values["steps"] = json.dumps(state.steps, ensure_ascii=False)
    else:
        # A client may have been shown more than the last flush stored: tell it the stored text.
        done["content"] = message.content if message else ""
        stored_steps = load_steps(message.steps) if message else []
        if stored_steps:
            done["steps"] = stored_steps  # and the stored timeline
    stored_usage = json.loads(values.get("usage") or (message.usage if message else None) or "null")
    closing = []
    if not any(event.type == "usage" for event in bus_events):
        closing.append(StreamEvent(seq + 1, "usage", stored_usage or zero_usage()))
    closing.append(StreamEvent(seq + len(closing) + 1, "done", done))
    conn.execute(
        update(runs_table).where(runs_table.c.message_id == run_id).values(ended_at=now, last_seq=closing[-1].seq)
    )
    conn.execute(update(messages_table).where(messages_table.c.id == run_id).values(**values))
    if message is not None:
        conn.execute(
            update(sessions_table)
            .where(sessions_table.c.id == message.session_id, sessions_table.c.active_run_id == run_id)
            .values(active_run_id=None)
        )
    return Ending(run_id, closing)


def live_runs(conn) -> list:
    return conn.execute(select(runs_table).where(runs_table.c.ended_at.is_(None))).all()


def end_runless_replies(conn) -> int:
    """Replies that never got a run row (the process died between commits) end as interrupted."""
    runless = (
        conn.execute(
            select(messages_table.c.id)
            .outerjoin(runs_table, runs_table.c.message_id == messages_table.c.id)
            .where(
                messages_table.c.status.in_(LIVE_STATUSES),
                messages_table.c.role == "assistant",
                runs_table.c.message_id.is_(None),
            )
        )
        .scalars()
        .all()
    )
    if runless:
        conn.execute(
            update(messages_table)
            .where(messages_table.c.id.in_(runless))
            .values(status="interrupted", error="This reply was never started.", completed_at=utcnow())
        )
    return len(runless)


def purge_idempotency_keys(conn) -> int:
    cutoff = utcnow() - IDEMPOTENCY_RETENTION
    table = IdempotencyKey.__table__
    return conn.execute(delete(table).where(and_(table.c.created_at < cutoff))).rowcount


# ---- the runs table for the housekeeping loop ---------------------------------------------------


def stops_flagged(engine, run_ids: list[str]) -> list[str]:
    """Those of these live runs whose stop was asked for (on any worker)."""
    with engine.connect() as conn:
        return (
            conn.execute(
                select(runs_table.c.message_id).where(
                    runs_table.c.message_id.in_(run_ids),
                    runs_table.c.ended_at.is_(None),
                    runs_table.c.cancel_requested_at.is_not(None),
                )
            )
            .scalars()
            .all()
        )


def beat(engine, run_ids: list[str]) -> None:
    """The heartbeat of the runs this process drives."""
    with engine.begin() as conn:
        conn.execute(
            update(runs_table)
            .where(runs_table.c.message_id.in_(run_ids), runs_table.c.ended_at.is_(None))
            .values(beat_at=utcnow())
        )


def purge(engine) -> int:
    with engine.begin() as conn:
        return purge_idempotency_keys(conn)


# ---- reading an ended run back (for a subscriber whose bus holds no more of it) -----------------


@dataclass(frozen=True)
class StoredReply:
    content: str
    status: str
    error: str | None
    usage: dict | None
    steps: list


def run_row(engine, run_id: str):
    with engine.connect() as conn:
        return conn.execute(select(runs_table).where(runs_table.c.message_id == run_id)).first()


def stored_reply(engine, message_id: str) -> StoredReply | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(
                messages_table.c.content,
                messages_table.c.status,
                messages_table.c.error,
                messages_table.c.usage,
                messages_table.c.steps,
            ).where(messages_table.c.id == message_id)
        ).first()
    if row is None:
        return None
    usage = json.loads(row.usage) if row.usage else None
    return StoredReply(
        row.content, row.status, row.error, usage if isinstance(usage, dict) else None, load_steps(row.steps)
    )


def replay_ended(message: StoredReply | None, row, sent: int) -> list[StreamEvent]:
    """An ended run whose events are gone, for a client that has events up to `sent`: the
    stored reply as token, usage, done, numbered up to the stored ceiling."""
    last = row.last_seq
    if message is None or sent >= last:
        return []
    events = []
    done = {"status": message.status, "message_id": row.message_id}
    if message.error:
        done["error"] = message.error
    if message.steps:
        done["steps"] = message.steps  # the timeline, kept with the message
    if sent == 0 and message.content and last >= 3:
        events.append(StreamEvent(last - 2, "token", {"text": message.content}))
    elif message.content or sent > 0:
        done["content"] = message.content  # replaces whatever the client holds
    if sent < last - 1:
        events.append(StreamEvent(last - 1, "usage", message.usage or zero_usage()))
    events.append(StreamEvent(last, "done", done))
    return events
