"""Error pages for people and JSON errors for API clients; no stack trace ever reaches a browser.

Also the one input layer: every value a request carries (path, query, form, JSON body, an imported
file) passes `check_request` or `parse_json` before a view uses it, and the bounded parsers below
(`parse_datetime`, `bounded_number`) are what the areas build their own validation on. Whatever
these refuse is a 400/422 with a sentence, never a 500 further down.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime, timezone

from flask import Request, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger("switchboard.errors")

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please log in to continue.",
    403: "You are not allowed to do that.",
    404: "There is nothing here.",
    405: "That method is not allowed here.",
    409: "That conflicts with the current state.",
    413: "The request is too large.",
    415: "That content type is not supported here.",
    422: "The request could not be processed.",
    429: "Too many attempts. Wait a minute and try again.",
    503: "Switchboard cannot serve this right now. Try again in a few seconds.",
    500: "Something went wrong on our side. The error was logged; try again.",
}
CSRF_MESSAGE = "Your form expired or lost its security token. Reload the page and try again."


class RequestError(Exception):
    """A request that cannot be served: the HTTP status and a sentence for a person.

    Raised anywhere below a view; the app-wide handler turns it into JSON or a page.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---- the input layer ----------------------------------------------------------------------------

# Deeper than any document of ours; Python's parser would recurse until RecursionError long after.
MAX_JSON_DEPTH = 64
# The largest integer a JSON number keeps exactly in every client (IEEE double), and far above any
# real token count or price: a bigger one is a mistake or an attack, and breaks float arithmetic.
MAX_SAFE_INTEGER = 2**53 - 1
# Event ids are sequence numbers in a 64-bit column.
MAX_EVENT_ID = 2**63 - 1
# Stored times are naive UTC; outside these years the arithmetic on them (time zones, "the next
# day", durations) overflows Python's datetime.
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime.max
# NUL ends a string in C and PostgreSQL refuses it; a lone surrogate cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(value: str, where: str) -> str:
    """`value` unchanged, or a 400 if it holds a character no database can store."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    what = "a NUL character" if found.group() == "\x00" else "an unpaired surrogate (\\ud800–\\udfff)"
    raise RequestError(400, f"{where} contains {what}, which cannot be stored. Remove it and send again.")


class InputRequest(Request):
    """Flask's request, refusing a multipart part without a name.

    Werkzeug keeps such a part under the key None, which breaks whatever walks the form's keys
    first (Flask-WTF's CSRF check, before any view: a 500).
    """

    def _load_form_data(self) -> None:
        loaded = "form" in self.__dict__
        super()._load_form_data()
        if loaded:
            return
        nameless = [name for name in ("form", "files") if None in self.__dict__[name]]
        for name in nameless:  # later readers (error pages) get the form without the part
            self.__dict__[name] = type(self.__dict__[name])(
                (key, value) for key, value in self.__dict__[name].items(multi=True) if key is not None
            )
        if nameless:
            raise RequestError(400, 'A part of the form has no name. Send each field as form-data; name="…".')


def check_request() -> None:
    """Before every view: path, query and form values, and any JSON body, pass the input layer."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            clean_text(value, f"The URL part {name}")
    for name, values in request.args.lists():
        clean_text(name, "A query parameter name")
        for value in values:
            clean_text(value, f"The query parameter {name[:40]}")
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for name, values in request.form.lists():
            clean_text(name, "A form field name")
            for value in values:
                clean_text(value, f"The form field {name[:40]}")
    if request.is_json and request.content_length != 0:
        request_json()  # refuse a bad body on every route, not only on those that read it
    for raw in (request.headers.get("Last-Event-ID"), request.args.get("last_event_id")):
        check_event_id(raw)


def check_event_id(raw: str | None) -> None:
    """The one value a client echoes back that the app reads as a number: a stream's resume point.

    Read with int(), which also takes "+9", "9_9" and spaces; beyond 64 bits no database can compare
    it (SQLite raised OverflowError mid-stream). Text that is not a number at all is left alone: a
    stream starts over for it, and the page's watch stream uses message ids there.
    """
    try:
        value = int(raw) if raw else 0
    except ValueError:
        return
    if abs(value) > MAX_EVENT_ID:
        raise RequestError(400, "Last-Event-ID is not an event id of this stream. Reconnect without it.")


def request_json():
    """The request body parsed by `parse_json`, once per request (None for an empty body)."""
    if "request_json" not in g:
        raw = request.get_data(cache=True)
        g.request_json = parse_json(raw, "The request body") if raw else None
    return g.request_json


def json_body() -> dict:
    """The request's JSON object, or a RequestError that says what is wrong with it."""
    if not request.is_json:
        raise RequestError(415, "Send the request body as JSON (Content-Type: application/json).")
    body = request_json()
    if body is None:
        raise RequestError(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    return body


def _too_large(what: str) -> RequestError:
    return RequestError(400, f"{what} holds a number too large (the limit is {MAX_SAFE_INTEGER:,}).")


def parse_json(raw: bytes | str, what: str, invalid: str | None = None):
    """JSON text → Python values, refusing what JSON clients and our database cannot carry:
    nesting deeper than MAX_JSON_DEPTH, NaN/Infinity, numbers beyond MAX_SAFE_INTEGER, and text
    with NUL or lone surrogates (in keys too)."""
    invalid = invalid or f"{what} is not valid JSON."

    def integer(text: str) -> int:
        if len(text.lstrip("-")) > 16:  # also spares int() its 4,300-digit ValueError
            raise _too_large(what)
        value = int(text)
        if abs(value) > MAX_SAFE_INTEGER:
            raise _too_large(what)
        return value

    def real(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise _too_large(what)
        return value

    def constant(name: str):
        raise RequestError(400, invalid)

    try:
        value = json.loads(raw, parse_int=integer, parse_float=real, parse_constant=constant)
    except RecursionError:
        raise RequestError(400, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError:  # UnicodeDecodeError included
        raise RequestError(400, invalid) from None
    # Walked with a stack, not recursion: the check itself must not be what overflows.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            clean_text(item, f"Text in {what[0].lower()}{what[1:]}")
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise RequestError(400, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.")
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
    return value


def parse_datetime(raw: str, where: str, *, status: int = 400, invalid: str | None = None) -> datetime:
    """An ISO 8601 date or date-time as naive UTC, from EARLIEST to LATEST, or a RequestError."""
    invalid = invalid or f"{where} is not a valid timestamp: {raw[:40]!r}."
    text = clean_text(raw.strip(), where)
    out_of_range = RequestError(status, f"{where} must be between 1970-01-01 and 9999-12-31 (UTC), not {text[:40]!r}.")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(status, invalid) from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+05:00 is in year 0 in UTC
            raise out_of_range from None
    if not EARLIEST <= value <= LATEST:
        raise out_of_range
    return value


def parse_int(raw: str, where: str, minimum: int, maximum: int, *, status: int = 400) -> int:
    """A whole number written in ASCII digits within minimum..maximum, or a RequestError.

    Not str.isdigit() + int(): "²" is a digit to the first and not a number to the second, and
    int() refuses more than 4,300 digits with a ValueError.
    """
    if not re.fullmatch(r"-?[0-9]{1,18}", raw.strip()) or not minimum <= int(raw) <= maximum:
        raise RequestError(status, f"{where} must be a whole number from {minimum:,} to {maximum:,}.")
    return int(raw)


def bounded_number(value, *, integer: bool, maximum: float = MAX_SAFE_INTEGER) -> bool:
    """True for a finite, non-negative number (an int when `integer`) up to `maximum`; not a bool."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return 0 <= value <= maximum


def wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best == "application/json" and not request.headers.get("HX-Request")
    )


def error_response(status: int, message: str, code: str | None = None):
    """The one way every layer reports a failure: JSON under /api, a page elsewhere."""
    code = code or _code_name(status)
    if wants_json():
        response = jsonify(error=code, message=message)
        response.status_code = status
        return response
    template = "partials/error_banner.html" if request.headers.get("HX-Request") else "error.html"
    return render_template(template, status=status, message=message), status


CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def _code_name(status: int) -> str:
    return CODES.get(status, "error")


def init_inputs(app) -> None:
    """Registered after the login check, so that a logged-out request is told to log in first."""
    app.request_class = InputRequest
    app.before_request(check_request)


def register_error_handlers(app, translators=()) -> None:
    """Install the handlers. `translators` map an unexpected exception to the RequestError it
    really is (e.g. a locked database → 503), or None; whatever none claims is a 500."""

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError):
        response = app.make_response(error_response(exc.status, exc.message))
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return error_response(400, CSRF_MESSAGE, "csrf_failed")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Our own aborts carry a specific sentence; werkzeug's defaults are replaced by ours.
        default = type(exc).description
        message = exc.description if exc.description and exc.description != default else None
        response = error_response(exc.code or 500, message or MESSAGES.get(exc.code, exc.name))
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response = app.make_response(response)
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        if isinstance(exc, HTTPException):
            return http_error(exc)
        for translate in translators:
            known = translate(exc)
            if known is not None:  # e.g. locked or full: a sentence and Retry-After, not a 500
                log.warning("%s on %s %s: %s", type(known).__name__, request.method, request.path, exc)
                return request_error(known)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, MESSAGES[500], "internal_error")

    app.register_error_handler(InternalServerError, unexpected_error)
