"""The event bus: where a run's numbered events go, and where every subscriber reads them.

Two backends with one surface, chosen by configuration:

- `MemoryBus` (the default): the events live in this process. Subscribers are woken by a
  condition, no polling. With it Switchboard runs one gunicorn worker (gevent, a thousand
  streams), which gunicorn.conf.py enforces, so no subscriber can ever sit in another process.
- `RedisBus` (REDIS_URL): each run's events are a Redis Stream `run:{id}` with ids `<seq>-0`, so
  any worker on any host replays after Last-Event-ID (XRANGE semantics through XREAD) and then
  follows with blocking reads; stops travel on a pub/sub channel to whichever process drives
  the run. redis-py's sockets are cooperative under gevent's monkey-patching.

`read()` answers None when the bus holds no log for a run (never started here, or expired):
the caller then falls back to the database, which keeps the durable record.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .events import ReplyState, StreamEvent

log = logging.getLogger("switchboard.runs")

CANCEL_CHANNEL = "switchboard:cancel"
# A finished run's log stays this long for clients reconnecting right after `done`; later
# replays are rebuilt from the database.
ENDED_GRACE_SECONDS = 60.0
# Every Redis command gives up after this long without an answer (redis-py's own default, named
# here so that a change of library cannot move it under READ_BLOCK_SECONDS).
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0
# A blocking read waits at most this long, well inside the socket timeout: a subscriber waiting
# for a quiet run (an agent thinking, a request awaiting approval, the default 15 s heartbeat)
# otherwise saw its read time out, and its stream broke off with "Error handling request".
READ_BLOCK_SECONDS = 2.0


class BusUnavailable(Exception):
    """The bus cannot be read or written right now (Redis down or not answering)."""


@dataclass
class _MemoryLog:
    """One run's events in memory: the newest `cap` in full, older ones folded into `base`."""

    cap: int
    events: deque = field(default_factory=deque)
    base: ReplyState = field(default_factory=ReplyState)
    changed: threading.Condition = field(default_factory=threading.Condition)
    ended_at: float | None = None

    def append(self, events: list[StreamEvent]) -> None:
        with self.changed:
            self.events.extend(events)
            if len(self.events) > self.cap:
                # Bounded memory whatever the reply's length: the oldest events are folded into
                # one state, which a late subscriber receives as a snapshot.
                for _ in range(len(self.events) // 2):
                    self.base.apply(self.events.popleft())
            if events and events[-1].type == "done":
                self.ended_at = time.monotonic()
            self.changed.notify_all()

    def after(self, seq: int) -> list[StreamEvent]:
        events = self.events
        if not events or events[-1].seq <= seq:
            return []
        if seq < self.base.seq:
            return [snapshot_event(self.base), *events]
        first = events[0].seq
        return list(events)[max(seq - first + 1, 0) :]


def snapshot_event(state: ReplyState) -> StreamEvent:
    """The reply up to `state.seq` as one event: what a subscriber that fell behind is given."""
    data = {"text": state.text, "status": state.status}
    if state.approvals:
        data["approvals"] = list(state.approvals.values())
    if state.steps_seen:  # the timeline and the last output's time, so a late subscriber has them
        data.update(steps=list(state.steps), steps_seen=state.steps_seen)
    if state.last_output_at:
        data["last_output_at"] = state.last_output_at
    return StreamEvent(state.seq, "snapshot", data)


class MemoryBus:
    """Events in this process's memory; stops are delivered by a direct call."""

    kind = "memory"

    def __init__(self, cap: int = 20_000):
        self.cap = cap
        self._logs: dict[str, _MemoryLog] = {}
        self._lock = threading.Lock()
        self._on_cancel = None

    def open(self, run_id: str) -> None:
        with self._lock:
            self._logs.setdefault(run_id, _MemoryLog(self.cap))

    def publish(self, run_id: str, event: StreamEvent) -> None:
        self.publish_many(run_id, [event])

    def publish_many(self, run_id: str, events: list[StreamEvent]) -> None:
        """Events in order (a `done` only last); subscribers are woken once."""
        log_ = self._logs.get(run_id)
        if log_ is None:
            self.open(run_id)
            log_ = self._logs[run_id]
        log_.append(events)

    def read(self, run_id: str, after_seq: int, timeout: float) -> list[StreamEvent] | None:
        log_ = self._logs.get(run_id)
        if log_ is None:
            return None
        with log_.changed:
            pending = log_.after(after_seq)
            if not pending and log_.ended_at is not None:
                return None  # past `done`: nothing will come; the database has the end
            if not pending:
                log_.changed.wait(timeout=timeout)
                pending = log_.after(after_seq)
        return pending

    def has_log(self, run_id: str) -> bool:
        return run_id in self._logs

    def done_seq(self, run_id: str) -> int | None:
        """The seq of the run's `done`, if the bus holds its log and it has ended."""
        log_ = self._logs.get(run_id)
        if log_ is None or log_.ended_at is None or not log_.events:
            return None
        return log_.events[-1].seq

    def last_seq(self, run_id: str) -> int:
        log_ = self._logs.get(run_id)
        return log_.events[-1].seq if log_ is not None and log_.events else 0

    def events(self, run_id: str) -> list[StreamEvent]:
        log_ = self._logs.get(run_id)
        return log_.after(0) if log_ is not None else []

    def forget_ended(self, now: float | None = None) -> int:
        """Drop the logs of runs that ended more than ENDED_GRACE_SECONDS ago."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [rid for rid, lg in self._logs.items() if lg.ended_at and now - lg.ended_at > ENDED_GRACE_SECONDS]
            for run_id in old:
                del self._logs[run_id]
        return len(old)

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._logs.pop(run_id, None)

    def send_cancel(self, run_id: str) -> None:
        if self._on_cancel is not None:
            self._on_cancel(run_id)

    def listen_for_cancels(self, callback) -> None:
        self._on_cancel = callback

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _redis_errors(method):
    """Redis's own errors raised as BusUnavailable: callers handle one exception, whatever the bus."""

    @functools.wraps(method)
    def translated(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self._redis_module.RedisError as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    return translated


class RedisBus:
    """Events in Redis Streams, stops on a pub/sub channel; one connection pool per process."""

    kind = "redis"

    def __init__(self, url: str, retention_seconds: int, max_connections: int = 10_000, live_ttl_seconds: int = 86_400):
        import redis  # only needed with REDIS_URL

        self._redis_module = redis
        # Created in the worker (the app is built after gunicorn forks), so the pool is never
        # shared between processes.
        # Every waiting subscriber holds a connection in a blocking XREAD, so the pool must be
        # as large as the streams a worker holds (redis-py's default of 100 broke runs under load).
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
            max_connections=max_connections,
        )
        self.retention = retention_seconds
        self.live_ttl = live_ttl_seconds
        self._listener: threading.Thread | None = None
        self._stopping = False

    @staticmethod
    def key(run_id: str) -> str:
        return f"run:{run_id}"

    @_redis_errors
    def open(self, run_id: str) -> None:
        # An "open" entry at 0-1 makes the stream exist before the first event, so a reader can
        # tell "no events yet" from "no such log".
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key(run_id), {"e": ""}, id="0-1")
        pipe.expire(self.key(run_id), self.live_ttl)
        pipe.execute()

    def publish(self, run_id: str, event: StreamEvent) -> None:
        self.publish_many(run_id, [event])

    @_redis_errors
    def publish_many(self, run_id: str, events: list[StreamEvent]) -> None:
        """Events in order (a `done` only last), in one round trip; BusUnavailable when Redis
        does not take them. Publishing the same events again is harmless."""
        key = self.key(run_id)
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(key, {"e": event.to_json()}, id=f"{event.seq}-0")
        if events and events[-1].type == "done":
            pipe.expire(key, self.retention)
        for result in pipe.execute(raise_on_error=False):
            # An XADD refused for an id at or below the stream's last is an event already there:
            # a retry after an answer that was lost. Anything else is a failure.
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                raise result

    @_redis_errors
    def read(self, run_id: str, after_seq: int, timeout: float) -> list[StreamEvent] | None:
        """As MemoryBus.read, waiting at most READ_BLOCK_SECONDS (an empty answer is a quiet
        moment to the caller); BusUnavailable when Redis does not answer."""
        key = self.key(run_id)
        block = max(int(min(timeout, READ_BLOCK_SECONDS) * 1000), 1)
        # Past the "open" entry (0-1) too: answering it as news made a reader of a run with no
        # event yet ask again at once, in a loop, until the first event.
        start = f"{after_seq}-0" if after_seq > 0 else "0-1"
        reply = self.client.xread({key: start}, count=1000, block=block)
        if not reply:
            return [] if self.client.exists(key) else None
        return [StreamEvent.from_json(fields[b"e"]) for _id, fields in reply[0][1] if fields.get(b"e")]

    @_redis_errors
    def has_log(self, run_id: str) -> bool:
        return bool(self.client.exists(self.key(run_id)))

    @_redis_errors
    def done_seq(self, run_id: str) -> int | None:
        entries = self.client.xrevrange(self.key(run_id), count=1)
        if not entries or not entries[0][1].get(b"e"):
            return None
        last = StreamEvent.from_json(entries[0][1][b"e"])
        return last.seq if last.type == "done" else None

    @_redis_errors
    def last_seq(self, run_id: str) -> int:
        entries = self.client.xrevrange(self.key(run_id), count=1)
        if not entries:
            return 0
        return int(entries[0][0].split(b"-")[0])

    @_redis_errors
    def events(self, run_id: str) -> list[StreamEvent]:
        return [
            StreamEvent.from_json(fields[b"e"])
            for _id, fields in self.client.xrange(self.key(run_id), min="1-0")
            if fields.get(b"e")
        ]

    def forget_ended(self, now: float | None = None) -> int:
        return 0  # Redis expires ended logs itself (EXPIRE at `done`)

    @_redis_errors
    def drop(self, run_id: str) -> None:
        self.client.delete(self.key(run_id))

    @_redis_errors
    def send_cancel(self, run_id: str) -> None:
        self.client.publish(CANCEL_CHANNEL, run_id)

    def listen_for_cancels(self, callback) -> None:
        """Deliver every stop published anywhere to `callback(run_id)`, from a listener thread."""
        if self._listener is not None:
            return

        def listen() -> None:
            while not self._stopping:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(CANCEL_CHANNEL)
                    for message in pubsub.listen():
                        if self._stopping:
                            return
                        if message and message.get("type") == "message":
                            callback(message["data"].decode())
                except Exception as exc:  # Redis lost, or its client closed under us (stopping)
                    if self._stopping:
                        return
                    log.warning("cancel listener lost Redis (%s); reconnecting", type(exc).__name__)
                    time.sleep(1.0)
                finally:
                    pubsub.close()

        self._listener = threading.Thread(target=listen, name="run-cancel-listener", daemon=True)
        self._listener.start()

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except self._redis_module.RedisError:
            return False

    def close(self) -> None:
        self._stopping = True
        self.client.close()


def make_bus(config: dict):
    if config.get("REDIS_URL"):
        return RedisBus(config["REDIS_URL"], config["RUN_EVENT_RETENTION_SECONDS"])
    return MemoryBus(config.get("RUN_MEMORY_EVENTS", 20_000))
