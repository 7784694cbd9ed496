"""An agent's event stream read in pieces: the bytes of one read become the events they complete.

client.TaskStream reads a reply two ways. Its reader thread reads any body (read_events on what
transport.body_chunks gives). A chunked event stream on a plain connection is handed over to the
stream's consumer once the headers are in, and the consumer reads the socket itself (DirectBody):
under load the hand-over from a reader greenlet (a queue, a yield to the hub, a second wake-up)
put every read of every stream one more turn of the event loop away from its subscribers.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field

import urllib3

from . import transport
from .events import AGENT_FINAL_STATUSES, AgentEvent, MalformedMessage
from .registry import Agent
from .sse import SSEParser

log = logging.getLogger("switchboard.gateway")


def read_events(agent: Agent, payload: bytes, parser: SSEParser, translator, on_event) -> tuple[list, dict | None]:
    """The events of one read, in order, and the data of `done` if the reply ended in it.
    A malformed event is logged and skipped; `on_event` sees each event kept."""
    batch: list[AgentEvent] = []
    for message in parser.feed(payload):
        try:
            events = translator.translate(message)
        except MalformedMessage as exc:
            log.warning("Agent %s sent a malformed event (%s); skipping it.", agent.agent_id, exc)
            continue
        for event in events:
            if event.type == "done":
                return batch, event.data
            on_event(event)
            batch.append(event)
    return batch, None


def split_after_first_token(payload: bytes) -> tuple[bytes, bytes]:
    """`payload` cut after the blank line that ends its first `token` event: (that part, the
    rest), or (payload, b"") without one. A hint only: the parser is incremental, so any cut
    parses the same, and a "token" found elsewhere (in some text) merely cuts earlier."""
    at = payload.find(b"token")
    if at < 0:
        return payload, b""
    ends = [end + len(mark) for mark in (b"\n\n", b"\r\n\r\n", b"\r\r") if (end := payload.find(mark, at)) >= 0]
    if not ends:
        return payload, b""
    cut = min(ends)
    return payload[:cut], payload[cut:]


def done_outcome(agent: Agent, data: dict) -> tuple[str, str | None]:
    """The reply's status and error sentence for the agent's `done`."""
    status = data.get("status")
    agent_id = agent.agent_id
    if status not in AGENT_FINAL_STATUSES:
        return "error", f"Agent {agent_id} ended its reply with an unknown status {status!r}."
    if status != "error":
        return status, None
    reason = data.get("error")
    if isinstance(reason, str) and reason.strip():
        reason = transport.redact(agent, " ".join(reason.split()))[:300].rstrip(".")
        return "error", f"Agent {agent_id} reported an error: {reason}."
    return "error", f"Agent {agent_id} reported an error."


@dataclass
class DirectBody:
    """A chunked event stream read straight from its socket by the stream's consumer.

    The socket's timeout is the consumer's tick, so it still wakes to flush and to enforce a stop;
    the caller counts the quiet time across ticks (`last_data`) for the idle timeout.
    """

    response: urllib3.BaseHTTPResponse
    translator: object
    sock: socket.socket
    buffered: object  # http.client's buffered reader: the body's first bytes may be in it
    parser: SSEParser = field(default_factory=SSEParser)
    chunks: transport.ChunkedBody = field(default_factory=transport.ChunkedBody)
    drained: bool = False  # what the buffered reader held has been taken
    # Decoded bytes of the last read not parsed yet (the first token went on ahead of them),
    # and whether the body had ended with that read.
    held: bytes = b""
    held_ended: bool = False
    last_data: float = field(default_factory=time.monotonic)

    def read(self, timeout: float) -> bytes:
        """The bytes one read brings (b"" at the end of the connection). Raises TimeoutError
        when `timeout` seconds pass quietly, OSError when the socket fails or is shut."""
        if not self.drained:
            # Without waiting: a buffered reader with nothing left would block in the socket.
            self.sock.settimeout(0.0)
            data = self.buffered.read1(65536)
            self.drained = True
            if data:
                self.last_data = time.monotonic()
                return data
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if data:
            self.last_data = time.monotonic()
        return data

    def decode(self, data: bytes) -> bytes:
        """The event-stream bytes in `data` (raises transport.MalformedChunking)."""
        return self.chunks.feed(data)
