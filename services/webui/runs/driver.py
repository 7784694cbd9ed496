"""Driving one run: the agent's stream in, numbered events out to the bus, the state to the store.

A run is driven by a thread (a greenlet under gevent) that reads the agent through the gateway,
numbers each event, folds it into the reply's state (events.ReplyState) and publishes it on the
bus at once, together with the other events that one read of the agent brought. The state is
handed to the store every RUN_FLUSH_SECONDS and at the end, and is written off the serving
thread; `done` is published only once the end is stored, so a client that reads the session on
`done` finds the finished reply.

The store always records a ceiling (`runs.last_seq`) SEQ_HEADROOM above the newest event, and
an event above the stored ceiling is held back until the ceiling moves: whoever ends a run after
a crash can number its closing events above anything a client was sent.

An approval request (a `status_update` with `approval`) is stored before it is published; when the
agent goes on, the decision stored by whichever worker took it is published as an `approval` event.
"""

from __future__ import annotations

import logging
import time

from services.gateway.client import TaskStream
from services.gateway.control import cancel_task
from services.gateway.registry import Agent

from .. import approvals
from .bus import BusUnavailable
from .events import ReplyState, StreamEvent, stamp
from .store import Flush, RunStore

log = logging.getLogger("switchboard.runs")

SEQ_HEADROOM = 10_000
# A native agent gets this long to confirm a stop before the run closes the upstream itself.
CANCEL_GRACE_SECONDS = 2.0
TOO_LONG_ERROR = "The reply passed {limit:,} characters and was stopped there; the text so far is kept."
LOST_STREAM_ERROR = "Switchboard lost this reply's stream."
APPROVAL_NOT_STORED = "Switchboard could not record the agent's approval request, so the reply was stopped."
# Status updates always carry the server's time (`at`); a token carries it when the last stamp is
# this old, so every subscriber and a replay agree within a second on when output last came.
OUTPUT_STAMP_SECONDS = 1.0
# While the bus does not answer, a run keeps its events and offers them again this often.
BUS_RETRY_SECONDS = 1.0


class LiveRun:
    """The in-process half of a run that this process drives."""

    def __init__(self, run_id: str, session_id: str | None, agent: Agent, model_id: str):
        self.run_id = run_id
        self.session_id = session_id
        self.agent = agent
        self.model_id = model_id
        self.state = ReplyState()
        self.stream: TaskStream | None = None
        self.cancel_deadline: float | None = None
        self.finished = False
        self.ceiling = SEQ_HEADROOM  # stored with the run row by the send
        self.held: list[StreamEvent] = []
        # Events emitted from one read of the agent, published together when it is taken
        # (one bus call, one Redis round trip, one wake-up of each subscriber).
        self.outbox: list[StreamEvent] = []
        self.bus_retry_at = 0.0  # monotonic time before which the bus is not asked again
        self.log_lost = False  # the bus lost the run's log meanwhile (e.g. Redis restarted empty)
        self.last_flush: Flush | None = None
        self.dirty = False
        self.waiting_on: str | None = None  # the approval request the agent waits on
        self.stamped_at = 0.0  # monotonic time of the last `at` put on an event
        # How the context plan counts this reply's tokens (chat/tokens.Counter), when the
        # sender knows it counts the reply's text as it is: its count is stored with the end.
        self.counter = None

    def request_cancel(self) -> None:
        """Stop the agent's work: ask a native agent to cancel, else close the upstream."""
        if self.cancel_deadline is not None or self.finished:
            return
        self.cancel_deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        if self.agent.protocol == "native":
            cancel_task(self.agent, self.run_id)
        else:
            self.cancel_deadline = time.monotonic()
        self.close_if_due()

    def close_if_due(self) -> None:
        if self.cancel_deadline is not None and time.monotonic() >= self.cancel_deadline and self.stream:
            self.stream.close(status="cancelled")


class Driver:
    """Drives runs for one manager: shares its bus, store and settings."""

    def __init__(self, bus, store: RunStore, config):
        self.bus = bus
        self.store = store
        self.flush_every = config["RUN_FLUSH_SECONDS"]
        self.max_chars = config["MAX_REPLY_CHARS"]
        self.stale_seconds = config["RUN_STALE_SECONDS"]

    def drive(self, run: LiveRun) -> None:
        flush_every, max_chars = self.flush_every, self.max_chars
        last_flush = time.monotonic()
        if run.cancel_deadline is not None:  # stopped before the stream existed: no grace left
            run.cancel_deadline = time.monotonic()
        try:
            for event in run.stream:
                run.close_if_due()
                if event is not None:
                    if run.waiting_on is not None:
                        self._take_decision(run)
                    if event.type == "done":
                        self._finish(run, dict(event.data))
                        return
                    data = dict(event.data)
                    if event.type == "status_update" and "approval" in data:
                        data = self._store_approval(run, data)
                    self._emit(run, event.type, data)
                    if run.state.chars > max_chars and run.cancel_deadline is None:
                        run.cancel_deadline = time.monotonic()
                        if run.agent.protocol == "native":
                            cancel_task(run.agent, run.run_id)
                        run.stream.close("error", TOO_LONG_ERROR.format(limit=max_chars))
                    # What came in one read goes out together. No explicit yield: the next
                    # read (this greenlet's own, on the agent's socket; gateway/body.py) waits
                    # unless bytes are already there. The bookkeeping below is once per read
                    # too: under load a read brings several events, and this loop runs for
                    # every token of every reply.
                    if run.stream.batch_pending:
                        continue
                    self._publish_outbox(run)
                elif run.outbox:
                    self._publish_outbox(run)  # kept while the bus did not answer
                self._take_stored_ceiling(run)
                if run.last_flush is not None and run.last_flush.lost:
                    # Someone ended this run meanwhile (it looked dead while the store failed).
                    log.warning("run %s was ended elsewhere; stopping it", run.run_id)
                    if run.agent.protocol == "native":
                        cancel_task(run.agent, run.run_id)
                    return
                now = time.monotonic()
                if run.dirty and now - last_flush >= flush_every:
                    self._flush(run)
                    last_flush = now
        except Exception:  # never leave a reply spinning: record what we have as interrupted
            log.exception("run %s failed", run.run_id)
            if not run.finished:
                try:
                    self._finish(run, {"status": "interrupted", "error": LOST_STREAM_ERROR})
                except Exception:  # e.g. the bus is gone too: recovery ends it from the store
                    log.exception("run %s could not record its end", run.run_id)
        finally:
            if run.stream is not None:
                run.stream.close(status="cancelled")

    def _emit(self, run: LiveRun, type_: str, data: dict) -> StreamEvent:
        if type_ in ("token", "status_update"):
            now = time.monotonic()
            if type_ == "status_update" or now - run.stamped_at >= OUTPUT_STAMP_SECONDS:
                data["at"] = stamp()
                run.stamped_at = now
        event = StreamEvent(run.state.seq + 1, type_, data)
        run.state.apply(event)
        run.dirty = True
        if event.seq > run.ceiling or run.held:
            run.held.append(event)  # the store is behind: publish once the ceiling moves
        else:
            run.outbox.append(event)
        return event

    def _publish_outbox(self, run: LiveRun) -> bool:
        """Publish the waiting events, in order; True once none is left.

        While the bus does not answer (Redis down or stalled), the events stay here, with every
        later one behind them, and are offered again every BUS_RETRY_SECONDS: the reply goes on
        and is stored meanwhile, and its subscribers, who wait with heartbeats, resume where
        they were. (Raising instead would end every live reply, as interrupted, at a Redis blip.)
        """
        if not run.outbox:
            return True
        now = time.monotonic()
        if now < run.bus_retry_at:
            return False
        try:
            if run.bus_retry_at and not self.bus.has_log(run.run_id):
                # The bus came back without the events it had (a Redis restarted empty): a client
                # may now lack some, so `done` carries the stored text, which replaces its own.
                run.log_lost = True
                for event in run.outbox:
                    if event.type == "done":
                        event.data["content"] = run.state.text
            self.bus.publish_many(run.run_id, run.outbox)
        except BusUnavailable as exc:
            if not run.bus_retry_at:
                log.warning("run %s holds its events: the event bus does not answer (%s)", run.run_id, exc)
            run.bus_retry_at = now + BUS_RETRY_SECONDS
            return False
        if run.bus_retry_at:
            log.warning("run %s published the events it held for the event bus", run.run_id)
        run.outbox, run.bus_retry_at = [], 0.0
        return True

    def _store_approval(self, run: LiveRun, data: dict) -> dict:
        """An approval request is stored before anyone sees it (so an answer always finds its
        row, and a reload shows it); this greenlet waits meanwhile, holding the run's events."""
        self._publish_outbox(run)  # what came before the request need not wait for its row
        request = approvals.clean_request(data.pop("approval"))
        if request is None or data.get("status") != "awaiting_approval" or run.agent.protocol != "native":
            return data  # not a request Switchboard can show: the status alone, as before
        deadline = time.monotonic() + self.stale_seconds
        while True:
            try:
                data["approval"] = self.store.run(approvals.store_request, self.store.engine, run.run_id, request)
                run.waiting_on = request["approval_id"]
                return data
            except Exception:
                if time.monotonic() >= deadline:
                    log.exception("run %s could not store an approval request", run.run_id)
                    cancel_task(run.agent, run.run_id)
                    run.stream.close("error", APPROVAL_NOT_STORED)
                    return data
                time.sleep(0.2)

    def _take_decision(self, run: LiveRun) -> None:
        """The agent went on after a request: the decision (stored before the agent was told,
        by whichever worker took it) becomes an `approval` event every subscriber sees."""
        approval_id, run.waiting_on = run.waiting_on, None
        try:
            decision = self.store.run(approvals.stored_decision, self.store.engine, run.run_id, approval_id)
        except Exception:  # the page shows it on reload; the stream goes on without it
            log.exception("run %s could not read the decision on %s", run.run_id, approval_id)
            return
        if decision is not None:
            self._emit(run, "approval", decision)

    def _take_stored_ceiling(self, run: LiveRun) -> None:
        flush = run.last_flush
        if flush is not None and flush.stored.is_set() and not flush.lost and flush.ceiling > run.ceiling:
            run.ceiling = flush.ceiling
        due = 0
        while due < len(run.held) and run.held[due].seq <= run.ceiling:
            due += 1
        if due:
            run.outbox.extend(run.held[:due])  # behind anything older still waiting there
            run.held = run.held[due:]
            self._publish_outbox(run)

    def _flush(self, run: LiveRun, final: bool = False) -> Flush:
        state = run.state
        flush = Flush(
            run_id=run.run_id,
            session_id=run.session_id,
            content=state.text,
            status=state.status,
            usage=state.usage,
            error=state.error,
            steps=list(state.steps) if state.steps_seen else None,
            final=final,
            ceiling=state.seq if final else state.seq + SEQ_HEADROOM,
            counter=run.counter if final else None,
        )
        run.last_flush = self.store.submit(flush)
        run.dirty = False
        return run.last_flush

    def _finish(self, run: LiveRun, done: dict) -> None:
        """Store the end, then publish `done`; give up (leaving it to recovery) if it cannot."""
        if run.state.usage is None:  # the gateway always sends usage; a failure may not have
            self._emit(run, "usage", run.state.usage_so_far())
        self._publish_outbox(run)  # everything but `done` is out before the end is stored
        done["message_id"] = run.run_id
        if run.log_lost:
            done["content"] = run.state.text  # see _publish_outbox
        event = StreamEvent(run.state.seq + 1, "done", done)
        run.state.apply(event)
        flush = self._flush(run, final=True)
        deadline = time.monotonic() + self.stale_seconds
        while not flush.stored.is_set():
            self.store.pump(stored=flush.stored)
            if flush.stored.is_set():
                break
            if time.monotonic() >= deadline:
                # Its heartbeat stops with it; recovery ends it from the bus's events.
                log.error("run %s could not store its end; leaving it to recovery", run.run_id)
                return
            flush.stored.wait(0.1)
        if flush.lost:
            return  # recovery ended it first and published its own closing events
        run.ceiling = max(run.ceiling, event.seq)
        self._take_stored_ceiling(run)
        run.finished = True
        run.outbox.append(event)
        while not self._publish_outbox(run):
            if time.monotonic() >= deadline:
                # The end is stored: a subscriber that waits on the bus finds it in the database.
                log.error("run %s could not publish its end; its subscribers read it from the database", run.run_id)
                return
            time.sleep(max(run.bus_retry_at - time.monotonic(), 0.01))
