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


def body_chunks(response: urllib3.BaseHTTPResponse):
    """Bytes as they arrive: each chunk of a chunked body, else whatever a read finds (a body
    that simply runs to EOF must not be read in fixed sizes, which would wait for them)."""
    if response.chunked:
        yield from response.read_chunked()
        return
    while True:
        data = response.read1(65536)
        if not data:
            return
        yield data


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
