"""Error pages for people and JSON errors for API clients; no stack trace ever reaches a browser."""
from __future__ import annotations

import logging

from flask import jsonify, render_template, request
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


def json_body() -> dict:
    """The request's JSON object, or a RequestError that says what is wrong with it."""
    body = request.get_json(silent=True)
    if body is None:
        if request.mimetype != "application/json":
            raise RequestError(415, "Send the request body as JSON (Content-Type: application/json).")
        raise RequestError(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    return body


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
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "unprocessable", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}


def _code_name(status: int) -> str:
    return CODES.get(status, "error")


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
