"""One-line structured logs with a request id, and redaction of secrets from every line.

Redaction happens in the formatter, on the final text, so a secret is caught whichever logger,
argument or exception carried it (werkzeug's request line, gunicorn's error log, our own).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid

from flask import g, has_request_context, request

REDACTED = "[redacted]"
_SECRET_NAMES = (
    r"password|passwd|secret|secret_key|token|api[_-]?key|master_key|authorization|cookie|switchboard_session"
)
_PATTERNS = [
    # key=value and key: value (query strings, form bodies, headers, repr of dicts)
    re.compile(rf"(?i)(\b(?:[\w-]*[_-])?(?:{_SECRET_NAMES})['\"]?\s*[=:]\s*['\"]?)(Bearer\s+)?[^\s&'\",;}}]+"),
    re.compile(r"(?i)(\b(?:set-)?cookie['\"]?\s*:\s*['\"]?)[^\n\"']+"),
    re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None) and has_request_context():
            record.request_id = getattr(g, "request_id", None)
        return True


def configure_logging(level: str) -> None:
    """Route every logger through one redacting JSON-lines handler on stderr."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_switchboard", False):
            root.setLevel(level)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._switchboard = True
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestIdFilter())
    root.handlers = [handler]
    root.setLevel(level)
    # gunicorn's loggers keep their own handlers; give them our formatter so that they redact.
    for name in ("gunicorn.error", "gunicorn.access"):
        for existing in logging.getLogger(name).handlers:
            existing.setFormatter(JsonLineFormatter())
            existing.addFilter(RequestIdFilter())


def assign_request_id() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]


def echo_request_id(response):
    if has_request_context() and getattr(g, "request_id", None):
        response.headers["X-Request-ID"] = g.request_id
    return response
