"""Recovery and housekeeping: runs left live by a process that died, and old event logs.

A run's driver is "host:pid" plus a heartbeat (`beat_at`). A run is an orphan when its heartbeat
is stale, or its driver was a process on this host that no longer exists.
"""
from __future__ import annotations

import json
import socket
from datetime import timedelta

import psutil
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import OperationalError, ProgrammingError

from ..extensions import db
from ..models import LIVE_STATUSES, utcnow
from .runs import OWNER, _live, events_table, log, messages_table, runs_table, sessions_table


def is_orphan(run_row, stale_seconds: float) -> bool:
    if run_row.ended_at is not None:
        return False
    if run_row.owner == OWNER:
        return run_row.message_id not in _live
    beat = run_row.beat_at or run_row.created_at
    if beat < utcnow() - timedelta(seconds=stale_seconds):
        return True
    host, _, pid = (run_row.owner or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def mark_interrupted(message_ids: list[str]) -> int:
    """End runs whose driving process died: keep the text, status interrupted, close the grammar."""
    if not message_ids:
        return 0
    now = utcnow()
    error = "The server restarted while this reply was being written; the text so far is kept."
    with db.engine.begin() as conn:
        for message_id in message_ids:
            ended = conn.execute(
                update(runs_table)
                .where(runs_table.c.message_id == message_id, runs_table.c.ended_at.is_(None))
                .values(ended_at=now)
            ).rowcount
            if not ended:
                continue  # someone else finished it first
            last_seq = conn.execute(
                select(runs_table.c.last_seq).where(runs_table.c.message_id == message_id)
            ).scalar_one()
            stored_max = conn.execute(
                select(db.func.max(events_table.c.seq)).where(events_table.c.run_id == message_id)
            ).scalar() or 0
            seq = max(last_seq, stored_max)
            usage_row = conn.execute(
                select(messages_table.c.usage, messages_table.c.session_id).where(messages_table.c.id == message_id)
            ).first()
            conn.execute(
                insert(events_table),
                [
                    {"run_id": message_id, "seq": seq + 1, "type": "usage",
                     "data": usage_row.usage or json.dumps({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
                     "created_at": now},
                    {"run_id": message_id, "seq": seq + 2, "type": "done",
                     "data": json.dumps({"status": "interrupted", "error": error, "message_id": message_id}),
                     "created_at": now},
                ],
            )
            conn.execute(update(runs_table).where(runs_table.c.message_id == message_id).values(last_seq=seq + 2))
            conn.execute(
                update(messages_table)
                .where(messages_table.c.id == message_id)
                .values(status="interrupted", error=error, completed_at=now)
            )
            conn.execute(
                update(sessions_table)
                .where(sessions_table.c.id == usage_row.session_id, sessions_table.c.active_run_id == message_id)
                .values(active_run_id=None)
            )
    log.warning("marked %d orphaned run(s) interrupted", len(message_ids))
    return len(message_ids)


def recover_orphans(stale_seconds: float) -> int:
    """Find runs left live by a process that died (stale heartbeat or dead pid) and end them."""
    with db.engine.connect() as conn:
        rows = conn.execute(select(runs_table).where(runs_table.c.ended_at.is_(None))).all()
    orphans = [row.message_id for row in rows if is_orphan(row, stale_seconds)]
    # Replies that never got a run row (the process died between commits) are orphans too.
    with db.engine.connect() as conn:
        runless = conn.execute(
            select(messages_table.c.id)
            .outerjoin(runs_table, runs_table.c.message_id == messages_table.c.id)
            .where(messages_table.c.status.in_(LIVE_STATUSES), runs_table.c.message_id.is_(None))
        ).scalars().all()
    if runless:
        with db.engine.begin() as conn:
            conn.execute(
                update(messages_table)
                .where(messages_table.c.id.in_(runless))
                .values(status="interrupted", error="This reply was never started.", completed_at=utcnow())
            )
    return mark_interrupted(orphans) + len(runless)


def purge_event_logs(retention_seconds: int) -> int:
    """Drop event logs of runs that ended long ago; their replay is then synthesized."""
    cutoff = utcnow() - timedelta(seconds=retention_seconds)
    with db.engine.begin() as conn:
        old_runs = select(runs_table.c.message_id).where(
            and_(runs_table.c.ended_at.is_not(None), runs_table.c.ended_at < cutoff)
        )
        return conn.execute(delete(events_table).where(events_table.c.run_id.in_(old_runs))).rowcount


def init_runs(app) -> None:
    """On start-up: end the runs of dead processes and purge old event logs."""
    with app.app_context():
        try:
            recover_orphans(app.config["RUN_STALE_SECONDS"])
            purge_event_logs(app.config["RUN_EVENT_RETENTION_SECONDS"])
        except (OperationalError, ProgrammingError):
            # Tables not created yet (before `flask db upgrade`): nothing to recover.
            db.session.rollback()
