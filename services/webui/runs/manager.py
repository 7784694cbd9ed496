"""The run manager: one per app (app.extensions), the owner of every live run in this process.

Public surface: `prepare` / `launch` (or `launch_later`) / `abandon` a run, `cancel` one,
`subscribe` to one, `recover` orphans, `shutdown`. Each run is driven by a thread (a greenlet under gevent) running
driver.Driver. Besides, a housekeeping loop pumps the store, keeps the heartbeats of the runs this process drives,
  picks up stops flagged in the database, ends orphans (any process's) within
  RUN_STALE_SECONDS, without waiting for a subscriber, and indexes for search what the sends
  queued (sessions/search.py), so that no send waits for the full-text index.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from sqlalchemy.exc import OperationalError, ProgrammingError

from services.gateway.client import TaskStream
from services.gateway.control import cancel_task
from services.gateway.registry import Agent

from ..errors import RequestError
from ..sessions import search
from . import recovery, subscription
from .bus import BusUnavailable, make_bus
from .driver import Driver, LiveRun
from .store import RunStore

log = logging.getLogger("switchboard.runs")

EXTENSION = "switchboard.runs"
# How long the request that starts a run waits for the run's request to reach the agent: on
# loopback well under a millisecond; the cap only matters on a slow network.
AGENT_HEAD_START_SECONDS = 0.05
# A launch left to a request (launch_later) that has not happened by then is done by housekeeping.
LAUNCH_LATER_SECONDS = 1.0
HOUSEKEEPING_TICK = 0.05
CANCEL_POLL_SECONDS = 1.0
BEAT_SECONDS = 5.0
FORGET_SECONDS = 10.0
PURGE_SECONDS = 300.0
INDEX_SECONDS = 1.0  # how soon a sent message can be found by search without a search's catch-up
BUS_WARN_SECONDS = 10.0
SHUTDOWN_ERROR = "The server was stopped while this reply was being written; the text so far is kept."


class RunsUnavailable(RequestError):
    """No run can start now: the event bus (Redis) does not answer. Nothing was saved."""

    retry_after = 5

    def __init__(self):
        super().__init__(
            503,
            "Replies cannot be relayed right now (the server's event bus does not answer), so "
            "nothing was sent. Try again in a few seconds.",
        )


class RunManager:
    def __init__(self, app):
        config = app.config
        self.config = config
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.bus = make_bus(config)
        self.store = RunStore(config["SQLALCHEMY_DATABASE_URI"], config.get("SQLALCHEMY_ENGINE_OPTIONS"))
        self.driver = Driver(self.bus, self.store, config)
        self.stale_seconds = config["RUN_STALE_SECONDS"]
        self._agents = lambda: app.extensions["switchboard.registry"].current()
        self._live: dict[str, LiveRun] = {}
        # Prepared runs whose launch is left to a request: run_id -> (run, messages, launch by).
        self._pending: dict[str, tuple[LiveRun, list[dict], float]] = {}
        self._lock = threading.Lock()
        self._housekeeper: threading.Thread | None = None
        self._stopping = False
        self._bus_warned_at = -BUS_WARN_SECONDS
        # Called with each run this process drove, once it has ended and is stored (e.g. the
        # automatic summary, chat/context_actions.py); a failing hook is logged, never raised.
        self.on_end: list = []
        self.bus.listen_for_cancels(self._cancel_here)

    # ---- starting a run ------------------------------------------------------------------------

    def prepare(self, agent: Agent, run_id: str, session_id: str | None, model_id: str) -> LiveRun:
        """Register a run before its rows are committed, so no subscriber here mistakes the
        committed row for the orphan of a dead process."""
        self.start()
        run = LiveRun(run_id, session_id, agent, model_id)
        with self._lock:
            self._live[run_id] = run
        try:
            self.bus.open(run_id)
        except BusUnavailable as exc:
            with self._lock:
                self._live.pop(run_id, None)
            log.error("a run could not start: the event bus does not answer (%s)", exc)
            raise RunsUnavailable() from exc
        return run

    def abandon(self, run: LiveRun) -> None:
        with self._lock:
            self._live.pop(run.run_id, None)
        try:
            self.bus.drop(run.run_id)
        except BusUnavailable:
            pass  # an empty log, which expires on its own

    def launch(self, run: LiveRun, messages: list[dict], wait_sent: bool = True) -> None:
        """Send a prepared run, whose Run row is committed, to its agent; drive it in a thread.

        Returns once the agent has the request (or AGENT_HEAD_START_SECONDS passed), so the
        agent works while this request writes its answer; at once without `wait_sent`, for a
        caller that goes on to wait for the run's events (which lets the request go out).
        """
        config = self.config
        run.stream = TaskStream(
            run.agent,
            task_id=run.run_id,
            session_id=run.session_id or "",
            model_id=run.model_id,
            messages=messages,
            connect_timeout=config["AGENT_CONNECT_TIMEOUT"],
            idle_timeout=config["AGENT_IDLE_TIMEOUT"],
            approval_timeout=config["APPROVAL_TIMEOUT"],
            tick=min(config["RUN_FLUSH_SECONDS"], 0.25),
        )
        # The run's thread first, the request second: starting a thread waits for it, and that
        # wait must not fall between the request's connect and its send.
        threading.Thread(target=self._drive, args=(run,), name=f"run-{run.run_id[:8]}", daemon=True).start()
        try:
            run.stream.start()
        except RuntimeError:  # no thread to be had: end the reply now rather than leave it pending
            log.exception("run %s could not start reading its agent", run.run_id)
            run.stream.close("error", "Switchboard could not start this reply; try again.")
            return
        if wait_sent:
            run.stream.wait_sent(AGENT_HEAD_START_SECONDS)

    def launch_later(self, run: LiveRun, messages: list[dict]):
        """Leave a prepared run's launch to the caller: the function returned launches it (once;
        calling it again does nothing), without waiting for the request to reach the agent.

        For a request that answers with the run's own stream: it launches once the answer's
        headers are out, so that sending to the agent is the last thing it does before it waits
        for events. Launched before them, the agent's first token waited for this process to
        finish the answer's headers (bench/relay.py --api-only, in turn: 0.1–0.3 ms of the first token).
        Should the request never get to it (an error after the view), housekeeping launches the
        run after LAUNCH_LATER_SECONDS: a reply is never left pending.
        """
        with self._lock:
            self._pending[run.run_id] = (run, messages, time.monotonic() + LAUNCH_LATER_SECONDS)
        return lambda: self._launch_pending(run.run_id)

    def _launch_pending(self, run_id: str) -> None:
        with self._lock:
            pending = self._pending.pop(run_id, None)
        if pending is not None:
            self.launch(pending[0], pending[1], wait_sent=False)

    def is_driving(self, run_id: str) -> bool:
        return run_id in self._live

    def live_runs(self) -> list[LiveRun]:
        return list(self._live.values())

    def _drive(self, run: LiveRun) -> None:
        try:
            self.driver.drive(run)
        finally:
            with self._lock:
                self._live.pop(run.run_id, None)
        for hook in list(self.on_end):
            try:
                hook(run)
            except Exception:
                log.exception("a hook after run %s failed", run.run_id)

    # ---- stopping ----------------------------------------------------------------------------

    def cancel(self, run_id: str, agent: Agent | None) -> str:
        """Stop a run wherever it is driven: "cancelling", or "ended" when nobody drove it."""
        run = self._live.get(run_id)
        if run is not None:
            run.request_cancel()
            return "cancelling"
        row = self.store.run(recovery.run_row, self.store.engine, run_id)
        if row is None or row.ended_at is not None:
            return "ended"
        if recovery.is_orphan(row, self.owner, self._live, self.stale_seconds):
            self._end_orphans([row], status="cancelled", error=recovery.STOPPED)
            return "ended"
        try:
            self.bus.send_cancel(run_id)
        except BusUnavailable as exc:
            # The stop is flagged in the database already: the driving worker's housekeeping
            # finds it within CANCEL_POLL_SECONDS.
            self.bus_trouble(run_id, exc)
        if agent is not None and agent.protocol == "native":
            # The agent stops its work now; the driving worker sees `done cancelled`.
            cancel_task(agent, run_id)
        return "cancelling"

    def _cancel_here(self, run_id: str) -> None:
        run = self._live.get(run_id)
        if run is not None:
            run.request_cancel()

    # ---- subscribing -------------------------------------------------------------------------

    def subscribe(self, run_id: str, after_seq: int, wait):
        """Each event of `subscribe_batches`, one by one (None as there)."""
        for batch in self.subscribe_batches(run_id, after_seq, wait):
            if batch is None:
                yield None
            else:
                yield from batch

    def subscribe_batches(self, run_id: str, after_seq: int, wait):
        """Yield the run's events after `after_seq`, then live ones until `done`, in the batches
        the bus hands them over; None each time `wait()` passes quietly (subscription.py)."""
        return subscription.batches(self, run_id, after_seq, wait)

    def bus_trouble(self, run_id: str, exc: BusUnavailable) -> None:
        """Log that the bus does not answer: one line now and then, not one per stream."""
        now = time.monotonic()
        if now - self._bus_warned_at >= BUS_WARN_SECONDS:  # one line, not one per stream
            self._bus_warned_at = now
            log.warning("the event bus does not answer (%s); streams such as run %s wait for it", exc, run_id)

    # ---- recovery ----------------------------------------------------------------------------

    def recover(self) -> int:
        """End every orphaned run (of any process) and every reply that never got a run."""

        def find(conn_engine):
            with conn_engine.begin() as conn:
                runless = recovery.end_runless_replies(conn)
                return runless, recovery.live_runs(conn)

        runless, rows = self.store.run(find, self.store.engine)
        orphans = [row for row in rows if recovery.is_orphan(row, self.owner, self._live, self.stale_seconds)]
        return runless + self._end_orphans(orphans)

    def end_if_orphan(self, row) -> bool:
        """End the run of this Run row if no live process drives it; True if it was an orphan."""
        if not recovery.is_orphan(row, self.owner, self._live, self.stale_seconds):
            return False
        self._end_orphans([row])
        return True

    def _end_orphans(self, rows, status: str = "interrupted", error: str = recovery.INTERRUPTED) -> int:
        if not rows:
            return 0
        logged = {row.message_id: self._logged_events(row.message_id) for row in rows}

        def end(engine):
            with engine.begin() as conn:
                return [
                    e for e in (recovery.end_run(conn, rid, evs, status, error) for rid, evs in logged.items()) if e
                ]

        endings = self.store.run(end, self.store.engine)
        for ending in endings:
            try:
                self.bus.publish_many(ending.run_id, ending.events)
            except BusUnavailable as exc:  # stored: its subscribers find the end in the database
                self.bus_trouble(ending.run_id, exc)
        self._stop_agents_of({ending.run_id for ending in endings}, rows)
        if endings:
            log.warning("ended %d orphaned run(s) as %s", len(endings), status)
        return len(endings)

    def _logged_events(self, run_id: str) -> list:
        """The run's events on the bus; none when the bus does not answer (the run is then
        ended with its stored text, which `done` carries to its clients)."""
        try:
            return self.bus.events(run_id)
        except BusUnavailable as exc:
            self.bus_trouble(run_id, exc)
            return []

    def _stop_agents_of(self, run_ids: set[str], rows) -> None:
        """A native agent may still be working on an orphan's task: stop it (best effort)."""
        try:
            fleet = self._agents()
        except Exception:  # a remote registry that does not answer: nothing to stop through
            return
        for row in rows:
            agent = fleet.get(row.agent_id) if row.message_id in run_ids else None
            if agent is not None and agent.protocol == "native":
                threading.Thread(target=cancel_task, args=(agent, row.message_id, 1.0), daemon=True).start()

    # ---- housekeeping ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the housekeeping loop once (in the serving process, after any fork)."""
        if self._housekeeper is not None or self._stopping:
            return
        with self._lock:
            if self._housekeeper is None:
                self._housekeeper = threading.Thread(target=self._housekeep, name="run-housekeeper", daemon=True)
                self._housekeeper.start()

    def _housekeep(self) -> None:
        last = {"cancel": 0.0, "beat": 0.0, "recover": 0.0, "forget": 0.0, "purge": 0.0, "index": 0.0}
        recover_every = min(self.stale_seconds / 3, 5.0)
        beat_every = min(BEAT_SECONDS, self.stale_seconds / 3)
        while not self._stopping:
            time.sleep(HOUSEKEEPING_TICK)
            now = time.monotonic()
            try:
                self.store.pump(now, wait=False)  # during a pump: what is pending goes in the next one
                for run_id in [run_id for run_id, (_, _, by) in list(self._pending.items()) if now >= by]:
                    log.warning("run %s was launched by housekeeping: the request that started it did not", run_id)
                    self._launch_pending(run_id)
                live = list(self._live)
                if live and now - last["cancel"] >= CANCEL_POLL_SECONDS:
                    last["cancel"] = now
                    for run_id in self.store.run(recovery.stops_flagged, self.store.engine, live):
                        self._cancel_here(run_id)
                if live and now - last["beat"] >= beat_every:
                    last["beat"] = now
                    self.store.run(recovery.beat, self.store.engine, live)
                if now - last["recover"] >= recover_every:
                    last["recover"] = now
                    self.recover()
                if now - last["forget"] >= FORGET_SECONDS:
                    last["forget"] = now
                    self.bus.forget_ended()
                if now - last["index"] >= INDEX_SECONDS:
                    last["index"] = now
                    self.store.run(search.catch_up, self.store.engine)
                if now - last["purge"] >= PURGE_SECONDS:
                    last["purge"] = now
                    self.store.run(recovery.purge, self.store.engine)
            except Exception:
                log.exception("run housekeeping tick failed")
                time.sleep(1.0)

    def health(self) -> dict:
        return {
            "bus": self.bus.kind,
            "bus_ok": self.bus.ping(),
            "store_ok": self.store.healthy,
            "store_error": self.store.last_error,
            "live_runs": len(self._live),
        }

    def shutdown(self, timeout: float = 4.0) -> None:
        """End every run this process drives (text kept) and stop the agents' tasks."""
        for run_id in list(self._pending):
            self._launch_pending(run_id)  # so that it ends below like every other
        runs = list(self._live.values())
        for run in runs:
            # The stream first: its status is the reply's from then on. Asked first, the agent
            # could answer `done cancelled` while this greenlet waited for the cancel's answer.
            if run.stream is not None:
                run.stream.close("interrupted", SHUTDOWN_ERROR)
            if run.agent.protocol == "native":
                cancel_task(run.agent, run.run_id, timeout=1.0)
        deadline = time.monotonic() + timeout
        while self._live and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping = True
        self.store.pump()
        self.bus.close()  # and its listener for stops
        if runs:
            log.warning("shutdown ended %d live run(s)", len(runs))


def init_runs(app) -> RunManager:
    """Create the app's run manager and end the runs that dead processes left live."""
    manager = RunManager(app)
    app.extensions[EXTENSION] = manager
    try:
        manager.recover()
    except (OperationalError, ProgrammingError):
        pass  # tables not created yet (before `flask db upgrade`): nothing to recover
    # The housekeeping loop starts in a serving process only (gunicorn.conf.py, or the first run
    # or subscriber): a `flask` command must not beat, recover or purge in the background.
    return manager


def run_manager(app=None) -> RunManager:
    if app is None:
        from flask import current_app

        app = current_app
    return app.extensions[EXTENSION]
