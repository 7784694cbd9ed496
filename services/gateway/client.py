"""Send a task to an agent and read its reply as a stream of AgentEvents.

`open_task` never raises for an agent's faults: every way a reply can go wrong ends the
stream with a `done` event that says so in one sentence. Whatever the agent sends, a
TaskStream yields tokens and status updates in order, then exactly one `usage`, then
exactly one `done`. A reader thread sends the request and feeds a queue; under gevent's
monkey-patching that thread and queue are greenlets, and the same code works. Once the answer's
headers are in, a chunked event stream on a plain connection is handed over to the consumer,
which then reads the socket itself (body.DirectBody); any other body is read by the reader.
The request each protocol needs is built in task_request.py; what a reply cost is worked out in
usage.py; cancelling a task or answering its approval request is control.py.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import urllib3

from . import transport
from .body import DirectBody, done_outcome, read_events, split_after_first_token
from .control import cancel_task
from .events import FINAL_STATUSES, AgentEvent
from .registry import Agent
from .sse import SSEParser
from .task_request import task_request
from .usage import final_usage, not_reached

log = logging.getLogger("switchboard.gateway")


@dataclass(frozen=True)
class _End:
    """The reader's last word: how the upstream reply ended."""

    status: str
    error: str | None = None


_WAKE = object()  # put by close() so a consumer blocked on the queue looks again at once


class TaskStream:
    """An iterator of AgentEvents; `next()` gives None when `tick` seconds pass quietly."""

    def __init__(
        self,
        agent: Agent,
        *,
        task_id: str,
        session_id: str,
        model_id: str,
        messages: list[dict],
        connect_timeout: float,
        idle_timeout: float,
        tick: float | None,
        approval_timeout: float | None = None,
    ):
        self.agent = agent
        self.task_id = task_id
        self.session_id = session_id
        self.model_id = model_id
        self.messages = messages
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        # While the agent waits for a person (its latest status is awaiting_approval), it may
        # stay silent this long instead of idle_timeout.
        self.approval_timeout = approval_timeout if approval_timeout is not None else idle_timeout
        self._awaiting = False
        self.tick = tick
        self._queue: queue.Queue = queue.Queue()
        self._ready: deque = deque()  # events of a batch the reader queued, not yet taken
        self._lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._socket: socket.socket | None = None
        self._close_status: str | None = None
        self._close_error: str | None = None
        self._agent_usage: dict | None = None
        # Set when the request never reached the agent (or the agent refused it before doing
        # any work): such a reply costs nothing, not an estimate of its prompt.
        self._not_sent = False
        # Only the length is kept: the reply itself belongs to the consumer, and a run's memory
        # must not grow with a second copy of it.
        self._text_chars = 0
        self._final: deque[AgentEvent] = deque()
        self._direct: DirectBody | None = None  # set once the consumer reads the body itself
        self._handed_over = False  # the reader gave the body to the consumer: not its to close
        self._finished = False
        self._sent = threading.Event()
        self._reader = threading.Thread(target=self._read_upstream, name=f"switchboard-task-{task_id}", daemon=True)

    # --- consumer side ------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self) -> AgentEvent | None:
        while True:
            if self._final:
                return self._final.popleft()
            if self._finished:
                raise StopIteration
            if self._close_status is not None:
                self._finish(self._close_status, self._close_error)
                continue
            if self._ready:
                item = self._ready.popleft()
            elif self._direct is not None:
                if not self._read_direct():
                    return None  # a quiet tick
                continue
            else:
                try:
                    # Most events are already queued when asked for: no timer for those (under
                    # gevent a timed wait costs a Timeout object and a hub timer each time).
                    item = self._queue.get_nowait()
                except queue.Empty:
                    try:
                        item = self._queue.get(timeout=self.tick)
                    except queue.Empty:
                        return None
                if isinstance(item, list):  # the events of one read, in order
                    self._ready.extend(item)
                    continue
            if item is _WAKE:
                continue
            if isinstance(item, DirectBody):
                self._direct = item
                continue
            if isinstance(item, _End):
                self._finish(item.status, item.error)
                continue
            if item.type == "usage":
                # Held back: usage must come last, right before done, whenever it arrived.
                self._agent_usage = item.data
                continue
            if item.type == "token":
                self._text_chars += len(item.data["text"])
            return item

    @property
    def batch_pending(self) -> bool:
        """More events of the same read wait to be taken: a consumer that handles a read's
        events together (the run's driver publishes them at once) does so when this is False."""
        return bool(self._ready)

    @property
    def text_chars(self) -> int:
        """Characters of the reply so far, as the tokens yielded up to now."""
        return self._text_chars

    @property
    def finished(self) -> bool:
        return self._finished and not self._final

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Wait until the request has gone out to the agent, or the attempt has ended.

        Lets a caller give the agent a head start: whatever the caller does next then overlaps
        with the agent's work instead of delaying the request (under gevent the reader only
        runs when the caller blocks). False if `timeout` passed first.
        """
        return self._sent.wait(timeout)

    def close(self, status: str = "cancelled", error: str | None = None) -> None:
        """End the stream now, from any thread: it yields usage, then done with `status`."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"A stream cannot end with status {status!r}.")
        with self._lock:
            if self._close_status is None and not self._finished:
                self._close_status, self._close_error = status, error
            # Under the lock: the reader forgets the socket under the same lock when done
            # with it, so this can never shut a socket that now carries someone else's reply.
            if self._socket is not None:
                transport.shut_socket(self._socket)
            elif self._response is not None:
                transport.interrupt_response(self._response)
        self._queue.put(_WAKE)

    def __enter__(self) -> "TaskStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _read_direct(self) -> bool:
        """One read of the agent's body by the consumer: its events go to _ready (and an _End
        when the reply ended). False when a tick passed with nothing to read."""
        body = self._direct
        if body.held:
            # The rest of the read whose first token went ahead. Yield first, so that whoever
            # the consumer handed that token to (a subscriber's greenlet) writes it out now.
            time.sleep(0)
            payload, ended, body.held = body.held, body.held_ended, b""
        else:
            quiet = self._quiet_limit()
            try:
                data = body.read(quiet if self.tick is None else min(self.tick, quiet))
            except (TimeoutError, BlockingIOError):  # BlockingIOError: a tick of 0 makes the read not wait
                if time.monotonic() - body.last_data < quiet:
                    return False
                self._end_direct(*self._idle_end())
                return True
            except OSError:  # also close() shutting the socket under the read: its status wins
                data = b""
            try:
                payload = body.decode(data)
            except transport.MalformedChunking:
                payload, data = b"", b""
            ended = not data or body.chunks.done
            if not self._text_chars:
                # Until the first token, parse a read only up to it: when an agent's first
                # write holds many events, its first token is not kept waiting for the others
                # (at 20 tokens a read, 0.3 ms of the first token: bench/relay.py).
                payload, body.held = split_after_first_token(payload)
                body.held_ended, ended = (ended, False) if body.held else (False, ended)
        events, done = read_events(self.agent, payload, body.parser, body.translator, self._track_waiting)
        self._ready.extend(events)
        if done is not None:
            body.held = b""
            self._end_direct(*done_outcome(self.agent, done))
        elif ended:  # the connection or the body ended without a `done`
            self._end_direct("interrupted", transport.interrupted(self.agent))
        return True

    def _end_direct(self, status: str, error: str | None) -> None:
        """The directly read body is over: release the connection; end the reply unless close()
        already did (its own status wins, as with the reader)."""
        body, self._direct = self._direct, None
        with self._lock:
            self._socket, self._response = None, None
        body.response.close()
        body.response.release_conn()
        if self._close_status is None:
            self._ready.append(_End(status, error))

    def _quiet_limit(self) -> float:
        return self.approval_timeout if self._awaiting else self.idle_timeout

    def _idle_end(self) -> tuple[str, str]:
        self._stop_idle_task()
        if self._awaiting:
            return "error", transport.approval_too_long(self.approval_timeout)
        return "error", transport.idle_too_long(self.agent, self.idle_timeout)

    def _finish(self, status: str, error: str | None) -> None:
        if self._direct is not None:
            self._end_direct(status, error)  # closed meanwhile: give the connection back
        self._finished = True
        done = {"status": status}
        if error:
            done["error"] = error
        self._final.extend([AgentEvent("usage", self._final_usage()), AgentEvent("done", done)])

    def _final_usage(self) -> dict:
        if self._not_sent:
            return not_reached()
        return final_usage(self.agent, self.model_id, self._agent_usage, self.messages, self._text_chars)

    # --- reader side --------------------------------------------------------------------

    def start(self) -> "TaskStream":
        """Send the request (in the reader); open_task does this for you."""
        self._reader.start()
        return self

    def _put_end(self, status: str, error: str | None = None) -> None:
        self._queue.put(_End(status, error))

    def _put_not_sent(self, error: str) -> None:
        """End a reply the agent never worked on: an error, and no charge."""
        self._not_sent = True
        self._put_end("error", error)

    def _on_socket(self, sock: socket.socket) -> None:
        """Called by the connection right after it has written the request."""
        with self._lock:
            self._socket = sock
            if self._close_status is not None:
                transport.shut_socket(sock)
        self._sent.set()

    def _read_upstream(self) -> None:
        transport.socket_watcher.set(self._on_socket)
        try:
            self._request_and_read()
        except Exception:
            # A bug here must not leave the consumer waiting forever.
            log.exception("Reading agent %s's reply failed unexpectedly.", self.agent.agent_id)
            self._put_end("error", f"Switchboard lost agent {self.agent.agent_id}'s reply.")
        finally:
            self._sent.set()

    def _request_and_read(self) -> None:
        agent = self.agent
        if agent.model(self.model_id) is None:
            self._put_not_sent(f"Agent {agent.agent_id} does not offer model '{self.model_id}'.")
            return
        try:
            request = task_request(
                agent, task_id=self.task_id, session_id=self.session_id, model_id=self.model_id, messages=self.messages
            )
        except transport.MissingApiKey as exc:
            self._put_not_sent(str(exc))
            return
        try:
            response = transport.post_for_stream(
                request.url,
                request.body,
                request.headers,
                connect_timeout=self.connect_timeout,
                read_timeout=self.idle_timeout,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            with self._lock:
                self._socket = None
            if self._close_status is None:
                self._put_end(*self._request_failure(exc))
            return
        finally:
            self._sent.set()  # https connections are not watched: headers imply it was sent
        with self._lock:
            self._response = response
            closing = self._close_status is not None
        try:
            if not closing:
                self._read_response(response, request.translator)
        finally:
            if not self._handed_over:  # else the consumer closes it (_end_direct)
                with self._lock:
                    self._socket, self._response = None, None
                response.close()
                response.release_conn()

    def _request_failure(self, exc: BaseException) -> tuple[str, str]:
        if transport.is_connect_failure(exc):
            self._not_sent = True
            return "error", transport.not_answering(self.agent)
        if transport.is_read_timeout(exc):
            self._stop_idle_task()
            return "error", transport.idle_too_long(self.agent, self.idle_timeout)
        return "error", f"Agent {self.agent.agent_id} closed the connection before answering."

    def _stop_idle_task(self) -> None:
        """An agent silent past the idle timeout may still be working: stop its task too, so
        that giving up on the reply does not leave the work running (and billing)."""
        if self.agent.protocol == "native":
            cancel_task(self.agent, self.task_id)

    def _read_response(self, response: urllib3.BaseHTTPResponse, translator) -> None:
        agent = self.agent
        problem = transport.not_a_stream(agent, response)
        if problem is not None:
            self._put_not_sent(problem)
            return
        buffered = getattr(getattr(response, "_fp", None), "fp", None)  # http.client's reader
        with self._lock:
            sock = self._socket  # set for plain connections only (transport._WatchedConnection)
            if response.chunked and buffered is not None and sock is not None and self._close_status is None:
                self._handed_over = True
        if self._handed_over:
            self._queue.put(DirectBody(response, translator, sock, buffered))
            return
        parser = SSEParser()
        try:
            for chunk in transport.body_chunks(response):
                batch, done = read_events(
                    agent, chunk, parser, translator, lambda event: self._track_waiting(event, response)
                )
                if done is not None:
                    if batch:
                        self._queue.put(batch)
                    self._put_end(*done_outcome(agent, done))
                    return
                if batch:
                    # One queue item per read: under load many events arrive together, and
                    # handing them over at once costs one pass of the consumer, not one each.
                    self._queue.put(batch)
                    # Let the consumer take them now: under gevent, a reader with data waiting
                    # would parse the whole reply before anyone saw its first token.
                    time.sleep(0)
        except Exception as exc:
            if self._close_status is not None:
                return  # close() shut the socket under us; the consumer already knows
            if transport.is_read_timeout(exc):
                self._stop_idle_task()
                if self._awaiting:
                    self._put_end("error", transport.approval_too_long(self.approval_timeout))
                else:
                    self._put_end("error", transport.idle_too_long(agent, self.idle_timeout))
            else:
                self._put_end("interrupted", transport.interrupted(agent))
            return
        if self._close_status is None:
            self._put_end("interrupted", transport.interrupted(agent))

    def _track_waiting(self, event: AgentEvent, response: urllib3.BaseHTTPResponse | None = None) -> None:
        """Switch the read timeout when the agent starts or stops waiting for an approval (a
        body read directly keeps its tick as timeout and counts the quiet time instead)."""
        awaiting = self._awaiting
        if event.type == "status_update":
            awaiting = event.data.get("status") == "awaiting_approval"
        elif event.type == "token":
            awaiting = False
        if awaiting == self._awaiting:
            return
        self._awaiting = awaiting
        if response is None:
            return
        sock = self._socket or getattr(getattr(response, "_connection", None), "sock", None)
        if sock is not None:
            try:
                sock.settimeout(self.approval_timeout if awaiting else self.idle_timeout)
            except OSError:
                pass  # already shut: the read that follows ends the stream


def open_task(
    agent: Agent,
    *,
    task_id: str | None = None,
    session_id: str = "",
    model_id: str,
    messages: list[dict],
    connect_timeout: float = 3.0,
    idle_timeout: float = 120.0,
    tick: float | None = 0.25,
) -> TaskStream:
    """Start a task on `agent` and return its stream at once; the request runs in the reader."""
    stream = TaskStream(
        agent,
        task_id=task_id or uuid.uuid4().hex,
        session_id=session_id,
        model_id=model_id,
        messages=messages,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        tick=tick,
    )
    return stream.start()
