"""The JSON API's contract: an OpenAPI 3.1 description, served at GET /api/openapi.json.

Written as data, by hand, one module per area (each with its `paths()` and, where it has its own
components, `schemas()`), all built with `helpers`; `document()` merges them. tests/webui/
test_openapi.py keeps it in step with the URL map (every JSON route described, nothing described
that does not exist) and tests/webui/test_api_fuzz.py fuzzes the live app against it with
Schemathesis. It needs a login, like every route under /api/.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..errors import MAX_JSON_DEPTH, MAX_SAFE_INTEGER
from . import attachments, branches, chat, context, general, sessions, usage
from .helpers import error_schema

bp = Blueprint("openapi", __name__)

AREAS = (general, chat, sessions, usage, branches, context, attachments)


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(document(current_app.config["SESSION_COOKIE_NAME"]))


def document(cookie_name: str = "switchboard_session") -> dict:
    """The description, built afresh on each call (nothing shared between requests)."""
    paths, schemas = {}, {"Error": error_schema()}
    for area in AREAS:
        paths.update(area.paths())
        schemas.update(area.schemas())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard API",
            "version": "1",
            "description": "Chat with a fleet of AI agents and keep every session. Log in through the "
            "/login form; the session cookie then authenticates every call, and every "
            "write needs the X-CSRFToken header (GET /api/me gives the token). Errors are "
            'JSON `{"error": code, "message": sentence}`. Every input is refused with a '
            f"400 when JSON is nested more than {MAX_JSON_DEPTH} levels, holds NaN, Infinity "
            f"or an integer beyond ±{MAX_SAFE_INTEGER:,}, or when any text (path, query, form, "
            "JSON, imported file) holds a NUL character or an unpaired surrogate, or when "
            "Last-Event-ID is a number beyond 64 bits; dates must lie between 1970-01-01 "
            "and 9999-12-31 (UTC).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": cookie_name},
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": "Needed on POST, PATCH and DELETE.",
                },
            },
        },
        "security": [{"session": []}],
    }
