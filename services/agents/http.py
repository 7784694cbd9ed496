"""HTTP plumbing of the reference agent: JSON answers, request bodies and their checks, and
the socket access the crash directive needs.
"""

from __future__ import annotations

import json
import socket

from gevent.pywsgi import WSGIHandler

# Room for a message with attachments: ten files of 10 MB, images as base64.
MAX_BODY_BYTES = 160_000_000
_ROLES = ("system", "user", "assistant", "tool")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
}


def json_answer(start_response, status: int, payload: dict):
    body = json.dumps(payload).encode("utf-8")
    start_response(
        f"{status} {_REASONS[status]}", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def start_event_stream(start_response) -> None:
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ],
    )


def read_json(environ) -> tuple[dict | None, str | None]:
    """The request's JSON body, or what is wrong with it ("too large" means 413)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None, "Content-Length is not a number"
    if length > MAX_BODY_BYTES:
        return None, "the body is too large"
    raw = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return None, "the body is too large"
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, "the body is not JSON"


def task_problem(body) -> str | None:
    """What is wrong with a `POST /tasks` body, if anything."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for key in ("task_id", "model"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"'{key}' must be a non-empty string"
    if not isinstance(body.get("session_id"), str):
        return "'session_id' must be a string"
    return messages_problem(body.get("messages"))


def messages_problem(messages) -> str | None:
    """What is wrong with a request's `messages` (both protocols carry the same list), if anything."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in _ROLES
            or not _content_ok(message.get("content"))
        ):
            return f"message #{index + 1} needs a role ({', '.join(_ROLES)}) and a string content or a list of parts"
    return None


def _content_ok(content) -> bool:
    """A string, or a list of parts (native or OpenAI), each an object with a type."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)


def drop_connection(sock) -> None:
    """Crash on purpose: shut the socket mid-reply so the client sees the body end early."""
    if sock is None:
        raise RuntimeError("no socket to drop")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class SocketHandler(WSGIHandler):
    """Exposes the client socket to the app, for the crash directive only."""

    def get_environ(self):
        environ = super().get_environ()
        environ["switchboard.socket"] = self.socket
        return environ
