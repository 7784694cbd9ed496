"""HTTP plumbing shared by the gateway: pooled connections, auth headers, error sentences.

Agent faults become one-sentence messages here, in one place, so the web app shows the same
words whichever code path met the fault. Nothing here ever puts an API key into a message.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import socket
from typing import Callable

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from .registry import Agent

# Set by a TaskStream's reader (in its own thread or greenlet, hence its own context) so the
# connection carrying its request hands over the socket: close() can then shut it even
# while the reader is still waiting for the response headers.
socket_watcher: contextvars.ContextVar[Callable[[socket.socket], None] | None] = contextvars.ContextVar(
    "switchboard_socket_watcher", default=None
)


class _WatchedConnection(HTTPConnection):
    def request(self, *args, **kwargs):
        super().request(*args, **kwargs)
        watcher = socket_watcher.get()
        if watcher is not None and self.sock is not None:
            watcher(self.sock)


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


# Short calls (health probes, cancel): requests, without retries (a POST that reached an agent
# must not be sent twice) and deaf to proxy variables (agents live on known addresses).
SESSION = requests.Session()
SESSION.mount("http://", HTTPAdapter(pool_connections=64, pool_maxsize=256, max_retries=0))
SESSION.mount("https://", HTTPAdapter(pool_connections=16, pool_maxsize=256, max_retries=0))
SESSION.trust_env = False

# Task streams: urllib3, the transport under requests, used directly. requests' per-request
# work (merging session settings, cookies, hooks, wrapping the response) added about 0.3 ms
# to the time to the first token (bench/relay.py, A/B). Many concurrent streams share these
# pools, each holding one connection while it streams; urllib3 never reads proxy variables.
STREAM_POOLS = urllib3.PoolManager(
    num_pools=64, maxsize=1024, block=False, retries=False, ca_certs=requests.certs.where()
)
# A new dict: the default one is shared by every PoolManager in the process.
STREAM_POOLS.pool_classes_by_scheme = {**STREAM_POOLS.pool_classes_by_scheme, "http": _WatchedPool}


def post_for_stream(
    url: str, body: dict, headers: dict[str, str], *, connect_timeout: float, read_timeout: float
) -> urllib3.BaseHTTPResponse:
    """POST JSON and return the response once its headers are in; its body is left unread.

    Redirects are returned, never followed. Raises urllib3's errors (or OSError).
    """
    return STREAM_POOLS.urlopen(
        "POST",
        url,
        body=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", **headers},
        preload_content=False,
        redirect=False,
        retries=False,
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
    )


def shut_socket(sock: socket.socket) -> None:
    """Wake whoever is blocked reading sock, on any thread or greenlet, and tell the peer."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut or closed: nobody is blocked on it


class MalformedChunking(ValueError):
    """A chunked body whose framing is broken."""


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_SIZE_LINE = 4096


class ChunkedBody:
    """Incremental decoder of an HTTP/1.1 chunked body: feed it bytes as they arrive, it returns
    the payload they complete, however many chunks that spans.

    urllib3 and http.client hand over one chunk per call, and an agent writes one chunk per
    event: under load, when many events wait in the socket, every event would then cost a full
    pass through the reader, the run and its subscribers. Decoding everything one read brings
    lets them handle a batch per pass instead, so the cost per event falls as the load rises.
    Chunk extensions are ignored, and so are trailers (the body ends at the last chunk).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._left = 0  # payload bytes of the current chunk still to come
        self._crlf = False  # the current chunk's payload is in; its CRLF is not yet
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer
        buffer += data
        out = bytearray()
        position = 0
        while not self.done:
            if self._left:
                take = min(self._left, len(buffer) - position)
                if take <= 0:
                    break
                out += buffer[position : position + take]
                position += take
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if len(buffer) - position < 2:
                    break
                if buffer[position : position + 2] != b"\r\n":
                    raise MalformedChunking("a chunk does not end with CRLF")
                position += 2
                self._crlf = False
            end = buffer.find(b"\r\n", position)
            if end == -1:
                if len(buffer) - position > _MAX_SIZE_LINE:
                    raise MalformedChunking("a chunk size line is too long")
                break
            size = bytes(buffer[position:end]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size):
                raise MalformedChunking("a chunk size is not a hex number")
            position = end + 2
            self._left = int(size, 16)
            if self._left == 0:
                self.done = True
        del buffer[:position]
        return bytes(out)


def body_chunks(response: urllib3.BaseHTTPResponse):
    """Bytes as they arrive, as much as one read finds: a body that simply runs to EOF must not
    be read in fixed sizes, which would wait for them, and a chunked one is decoded here (see
    ChunkedBody). Raises MalformedChunking, or OSError / urllib3's errors from the socket."""
    raw = getattr(getattr(response, "_fp", None), "fp", None)  # http.client's buffered socket file
    if not response.chunked or raw is None:
        if response.chunked:
            yield from response.read_chunked()
            return
        while True:
            data = response.read1(65536)
            if not data:
                return
            yield data
    body = ChunkedBody()
    while not body.done:
        data = raw.read1(65536)
        if not data:
            raise urllib3.exceptions.ProtocolError("the connection closed inside a chunked body")
        payload = body.feed(data)
        if payload:
            yield payload


def interrupt_response(response: urllib3.BaseHTTPResponse) -> None:
    """Fallback when the socket was not handed over (e.g. https): shut it via the response.
    The reader then sees end-of-stream and closes the response itself."""
    try:
        response.shutdown()
        return
    except (ValueError, OSError):
        pass  # not set up for it: go to the socket
    sock = getattr(getattr(response, "_connection", None), "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            return
    except OSError:
        return  # already shut or closed: the reader is not blocked on it
    response.close()


class MissingApiKey(Exception):
    """The agent's api_key_env names a variable that is not set."""


def auth_headers(agent: Agent) -> dict[str, str]:
    if not agent.api_key_env:
        return {}
    key = os.environ.get(agent.api_key_env)
    if not key:
        raise MissingApiKey(
            f"Agent {agent.agent_id} needs the environment variable {agent.api_key_env}, which is not set."
        )
    return {"Authorization": f"Bearer {key}"}


def redact(agent: Agent, text: str) -> str:
    """Remove the agent's key from text that came back from the agent (some echo it)."""
    key = os.environ.get(agent.api_key_env) if agent.api_key_env else None
    return text.replace(key, "[redacted]") if key else text


def _chain(exc: BaseException):
    """Every exception reachable from exc through args, .reason, __cause__ and __context__."""
    seen, stack = set(), [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                stack.append(arg)
        for attr in ("reason", "__cause__", "__context__"):
            linked = getattr(current, attr, None)
            if isinstance(linked, BaseException):
                stack.append(linked)


def is_connect_failure(exc: BaseException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    return any(isinstance(e, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError)) for e in _chain(exc))


def is_read_timeout(exc: BaseException) -> bool:
    return any(
        isinstance(e, (requests.ReadTimeout, ReadTimeoutError, socket.timeout, TimeoutError)) for e in _chain(exc)
    )


def not_answering(agent: Agent) -> str:
    return f"Agent {agent.agent_id} is not answering on its port {agent.port}."


def idle_too_long(agent: Agent, seconds: float) -> str:
    amount = f"{seconds:g}"
    unit = "second" if amount == "1" else "seconds"
    return f"Agent {agent.agent_id} sent nothing for {amount} {unit}."


def approval_too_long(seconds: float) -> str:
    return f"Nobody answered the approval request within {duration(seconds)}; the agent was stopped."


def duration(seconds: float) -> str:
    """3600 → "1 h", 90 → "1.5 min", 2 → "2 s"."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def interrupted(agent: Agent) -> str:
    return f"Agent {agent.agent_id} stopped in the middle of its reply."


# An error answer's body is read this far for its reason: a huge body costs nothing.
ERROR_BODY_BYTES = 4096


def http_status_sentence(agent: Agent, status: int, body: bytes = b"") -> str:
    """What an HTTP error answer means, from its status and the first bytes of its body."""
    if 300 <= status < 400:
        return f"Agent {agent.agent_id} answered HTTP {status}; Switchboard does not follow redirects from agents."
    detail = _error_detail(agent, body)
    if detail:
        return f"Agent {agent.agent_id} answered HTTP {status} ({detail})."
    return f"Agent {agent.agent_id} answered HTTP {status}."


def not_a_stream(agent: Agent, response: urllib3.BaseHTTPResponse) -> str | None:
    """Why an agent's answer to a task is not an event stream to read (an error status, another
    content type), as one sentence; None when it is one."""
    if response.status >= 300:
        try:
            body = response.read(ERROR_BODY_BYTES)
        except (urllib3.exceptions.HTTPError, OSError):
            body = b""
        return http_status_sentence(agent, response.status, body)
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "text/event-stream":
        return (
            f"Agent {agent.agent_id} answered with content type '{content_type or 'none'}' instead of an event stream."
        )
    return None


def _error_detail(agent: Agent, body: bytes) -> str:
    """A short, single-line reason from an error body."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail"))
        if isinstance(error, dict):
            error = error.get("message")
        text = error if isinstance(error, str) else ""
    elif "<" in text:
        text = ""  # an HTML error page says nothing a person can use here
    text = re.sub(r"\s+", " ", redact(agent, text)).strip().rstrip(".")
    return text[:200]
