"""The durable record of runs, written off the serving thread, batched and retried.

A gevent worker serves every request and stream on one OS thread. A database write that waits
(SQLite's busy handler under another process's write lock, a full disk, a slow PostgreSQL)
would hold that thread and freeze every stream. So the run machinery never writes on it: the
latest state of each run is handed to `RunStore`, which writes all pending runs in one short
transaction on a native thread (gevent's threadpool, with an engine of its own), and retries
with back-off while the database refuses. Tokens keep flowing from memory meanwhile.

Without gevent (the test client, the CLI) the same calls simply run on the caller's thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import bindparam, create_engine, event, update
from sqlalchemy.pool import NullPool

from ..models import ConversationSession, Message, Run, usage_columns, utcnow

log = logging.getLogger("switchboard.runs")

runs_table = Run.__table__
messages_table = Message.__table__
sessions_table = ConversationSession.__table__

RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0
STORE_BUSY_TIMEOUT_MS = 2000


def gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("threading")


class Offloader:
    """Runs blocking database work where it cannot hold the gevent hub."""

    def __init__(self):
        self._pool = None
        if gevent_patched():
            from gevent.threadpool import ThreadPool

            # One native thread: writes stay in order, and the store's engine is never used by
            # two threads at once.
            self._pool = ThreadPool(1)

    def __call__(self, fn, *args):
        if self._pool is None:
            return fn(*args)
        return self._pool.spawn(fn, *args).get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.kill()


@dataclass
class Flush:
    """A run's state to store: the reply so far, and the ceiling of seqs it may publish."""

    run_id: str
    session_id: str
    content: str
    status: str
    usage: dict | None
    error: str | None
    ceiling: int
    final: bool = False
    steps: list | None = None  # the reply's timeline (status updates), kept with the message
    # With a final state: the reply's token count as the context plan makes it (chat/tokens.py),
    # stored with its end here so that the plan after a reply neither counts nor writes it on
    # the serving thread. `counter` has `name` and `message_tokens(text)`.
    counter: object | None = None
    stored: threading.Event = field(default_factory=threading.Event)
    lost: bool = False  # the run had been ended by someone else (recovery): stop driving it


class RunStore:
    """Pending writes of every run of this process; `pump()` stores them in one transaction."""

    def __init__(self, database_url: str, engine_options: dict | None = None):
        self.offload = Offloader()
        if database_url.startswith("sqlite"):
            self.engine = create_engine(database_url, poolclass=NullPool)

            @event.listens_for(self.engine, "connect")
            def _patient(dbapi_connection, _record):
                # On its own thread the store may wait for the write lock; the serving thread's
                # connections wait only a moment (database.py).
                dbapi_connection.execute(f"PRAGMA busy_timeout={STORE_BUSY_TIMEOUT_MS}")
        else:
            options = {k: v for k, v in (engine_options or {}).items() if k in ("pool_pre_ping",)}
            self.engine = create_engine(database_url, pool_size=2, max_overflow=0, **options)
        self.engine.update_execution_options(switchboard_store=True)
        self._pending: dict[str, Flush] = {}
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one pump at a time (see pump)
        self._written = threading.Event()  # set when the pump in progress ends
        self._written.set()
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST_SECONDS

    # --- producer side (the run drivers) ----------------------------------------------------

    def submit(self, flush: Flush) -> Flush:
        with self._lock:
            previous = self._pending.get(flush.run_id)
            if previous is not None and previous.final and not flush.final:
                return previous  # never let a later partial state replace a pending end
            self._pending[flush.run_id] = flush
        if previous is not None and previous is not flush:
            # The newer state supersedes it; whoever waits on the older one waits on this one.
            flush.stored = previous.stored
        return flush

    @property
    def healthy(self) -> bool:
        return self.failing_since is None

    # --- the writer ----------------------------------------------------------------------------

    def pump(self, now: float | None = None, stored: threading.Event | None = None, wait: bool = True) -> int:
        """Store everything pending (unless backing off after a failure); returns runs stored.

        One pump at a time: a caller that comes during a write waits for it to end, and then
        stores what is pending by then in one more transaction. With `stored` (a Flush's
        event), it returns as soon as that state is stored, by whichever pump. With
        `wait=False`, a caller that comes during a write returns at once (0): the periodic pump,
        whose loop also beats and picks up stops, waited up to 6 s while 500 ending runs took
        turns at the writer (bench/load.py (a)), and every run's heartbeat waited with it.

        Every run that ends pumps (driver.py stores its end at once). With 500 replies ending
        within seconds (bench/load.py (a)), each made a transaction of its own: 515 in the run,
        queued on the store's one thread, which held SQLite's write lock for 10 of the run's 15 s
        (the sends wait for that lock). Batched this way: 21-41 transactions, 3-3.5 s.
        """
        while stored is None or not stored.is_set():
            if self._writing.acquire(blocking=False):
                done = self._written = threading.Event()
                try:
                    return self._pump(time.monotonic() if now is None else now)
                finally:
                    self._writing.release()
                    done.set()
            if not wait:
                return 0
            self._written.wait()  # for the pump in progress
        return 0

    def _pump(self, now: float) -> int:
        if now < self._retry_at:
            return 0
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            lost = self.offload(self.write, list(batch.values()))
        except Exception as exc:  # locked, full, gone: keep the states and try again later
            with self._lock:
                for run_id, flush in batch.items():
                    newer = self._pending.get(run_id)
                    if newer is None:
                        self._pending[run_id] = flush
                    elif flush.final and not newer.final:
                        self._pending[run_id] = flush
            reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
            if self.failing_since is None:
                self.failing_since = now
                log.error("storing runs failed (%s); retrying", reason)
            self.last_error = reason
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, RETRY_MAX_SECONDS)
            return 0
        failing_since, self.failing_since, self.last_error = self.failing_since, None, None
        self._backoff = RETRY_FIRST_SECONDS
        if failing_since is not None:  # healthy first, then the (slower) log line
            log.warning("storing runs works again after %.1f s", now - failing_since)
        for run_id, flush in batch.items():
            flush.lost = run_id in lost
            flush.stored.set()
        return len(batch)

    def write(self, flushes: list[Flush]) -> set[str]:
        """Store these states in one transaction (on the store's thread); the runs found ended.

        A handful of statements whatever the number of runs: with hundreds of replies streaming,
        a statement per run per flush kept this thread (and the GIL it shares with the serving
        thread) busy a fifth of the time.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            # Claim first: one statement that takes the write lock and names the runs still
            # live, so nobody can end one of them between this check and the writes below.
            claimed = set(
                conn.execute(
                    update(runs_table)
                    .where(runs_table.c.message_id.in_([f.run_id for f in flushes]), runs_table.c.ended_at.is_(None))
                    .values(beat_at=now)
                    .returning(runs_table.c.message_id)
                ).scalars()
            )
            live = [flush for flush in flushes if flush.run_id in claimed]
            by_id = runs_table.c.message_id == bindparam("b_id")
            for final in (False, True):
                rows = [{"b_id": f.run_id, "b_seq": f.ceiling} for f in live if f.final is final]
                if rows:
                    ended = {"ended_at": now} if final else {}
                    conn.execute(update(runs_table).where(by_id).values(last_seq=bindparam("b_seq"), **ended), rows)
            groups: dict[tuple, list[dict]] = {}
            for flush in live:
                values = self._message_values(flush, now)
                groups.setdefault(tuple(sorted(values)), []).append(
                    {"b_id": flush.run_id, **{f"v_{name}": value for name, value in values.items()}}
                )
            for names, rows in groups.items():
                conn.execute(
                    update(messages_table)
                    .where(messages_table.c.id == bindparam("b_id"))
                    .values({name: bindparam(f"v_{name}") for name in names}),
                    rows,
                )
            ended_sessions = [{"b_session": f.session_id, "b_id": f.run_id} for f in live if f.final]
            if ended_sessions:
                conn.execute(
                    update(sessions_table)
                    .where(
                        sessions_table.c.id == bindparam("b_session"),
                        sessions_table.c.active_run_id == bindparam("b_id"),
                    )
                    .values(active_run_id=None, updated_at=now),
                    ended_sessions,
                )
        return {flush.run_id for flush in flushes} - claimed

    @staticmethod
    def _message_values(flush: Flush, now) -> dict:
        values = {"content": flush.content, "status": flush.status}
        if flush.usage is not None:
            values["usage"] = json.dumps(flush.usage, sort_keys=True)
            values.update(usage_columns(flush.usage))
        if flush.steps is not None:
            values["steps"] = json.dumps(flush.steps, ensure_ascii=False)
        if flush.final:
            values.update(error=flush.error, completed_at=now)
            if flush.counter is not None:
                values.update(token_count=flush.counter.message_tokens(flush.content), token_counter=flush.counter.name)
        return values

    def run(self, fn, *args):
        """Any other blocking database work of the run machinery, off the serving thread."""
        return self.offload(fn, *args)

    def close(self) -> None:
        self.offload.close()
        self.engine.dispose()
