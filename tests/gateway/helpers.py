"""Test helpers: a tiny scriptable HTTP server, event collection, task inspection."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from services.gateway import AgentEvent, TaskStream


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are a test."}, {"role": "user", "content": text}]


def collect(stream: TaskStream, limit_seconds: float = 20.0) -> tuple[list[AgentEvent], int]:
    """All events up to StopIteration, and how many idle ticks (None) came in between.
    The time limit only guards against a hang; it is not what the tests assert."""
    events, ticks = [], 0
    deadline = time.monotonic() + limit_seconds
    for event in stream:
        if event is None:
            ticks += 1
        else:
            events.append(event)
        assert time.monotonic() < deadline, f"stream did not end; got {events[-3:]}"
    return events, ticks


def types(events: list[AgentEvent]) -> list[str]:
    return [e.type for e in events]


def assert_grammar(events: list[AgentEvent]) -> None:
    """Tokens and status updates, then exactly one usage, then exactly one done."""
    kinds = types(events)
    assert kinds[-2:] == ["usage", "done"], kinds
    assert kinds.count("usage") == 1 and kinds.count("done") == 1, kinds
    assert set(kinds[:-2]) <= {"token", "status_update"}, kinds
    usage = events[-2].data
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(usage[key], int) and usage[key] >= 0, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert isinstance(usage["cost_usd"], float) and usage["cost_usd"] >= 0


def text_of(events: list[AgentEvent]) -> str:
    return "".join(e.data["text"] for e in events if e.type == "token")


def task_state(agent, task_id: str) -> dict:
    response = requests.get(f"{agent.base_url}/tasks/{task_id}", timeout=2)
    response.raise_for_status()
    return response.json()


class LocalHTTPServer:
    """A loopback HTTP/1.0 server whose answers a test sets per path, counting hits."""

    def __init__(self):
        self.routes: dict[str, tuple] = {}
        self._hits: Counter = Counter()
        self.last_headers: dict[str, dict] = {}
        self.last_bodies: dict[str, bytes] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                with outer._lock:
                    outer._hits[self.path] += 1
                    outer.last_headers[self.path] = dict(self.headers.items())
                    route = outer.routes.get(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer._lock:
                    outer.last_bodies[self.path] = body
                if route == "hang":
                    outer._stopping.wait(30)  # never answer while the test runs
                    return
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                status, headers, chunks, pause = route
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if pause:
                        time.sleep(pause)  # pacing the fake upstream, never an assertion

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def respond(self, path: str, status: int, body: bytes, content_type: str) -> None:
        self.routes[path] = (status, [("Content-Type", content_type), ("Content-Length", str(len(body)))], [body], 0)

    def stream(self, path: str, chunks: list[bytes], content_type="text/event-stream", pause: float = 0.0) -> None:
        """No Content-Length and no chunking: the body runs until the connection closes."""
        self.routes[path] = (200, [("Content-Type", content_type)], chunks, pause)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = (status, [("Location", location), ("Content-Length", "0")], [], 0)

    def hang(self, path: str) -> None:
        """Accept the request and never answer it."""
        self.routes[path] = "hang"

    def hits(self, path: str) -> int:
        with self._lock:
            return self._hits[path]

    def __enter__(self) -> "LocalHTTPServer":
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def sse(event: str | None, data) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
