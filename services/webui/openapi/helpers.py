"""The small builders every part of the OpenAPI description is written with."""

from __future__ import annotations

ID_MAX = 36  # session and message ids are UUIDs; longer ones are never found
IDEMPOTENCY_KEY_MAX = 128


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict, required=None, **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(required or properties), **extra}


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema: dict) -> dict:
    return {"description": description, "content": json_content(schema)}


ERROR_SENTENCES = {
    "400": "Malformed input (bad JSON, a value of the wrong kind, unstorable text, a date out of range) "
    "or a missing/expired CSRF token (`error: csrf_failed`).",
    "401": "Not logged in, or the login expired (`error: login_required`).",
    "403": "Logged in, but not allowed (e.g. listing other users' sessions without being an admin).",
    "404": "No such session, agent, reply or attachment, or it belongs to someone else.",
    "409": "Conflicts with the session's state: a reply is still being written, it is archived, "
    "or it belongs to another agent.",
    "413": "The body (or the imported file) is larger than the limit, or an attachment is larger than its "
    "limit or does not fit the quota.",
    "415": "The body is not JSON (Content-Type: application/json).",
    "422": "Well-formed but not acceptable: an unknown model, an empty or too long message or title, "
    "an inconsistent import.",
}


def errors(*statuses: int) -> dict:
    return {
        str(status): {"description": ERROR_SENTENCES[str(status)], "content": json_content(ref("Error"))}
        for status in statuses
    }


def error_schema() -> dict:
    """The body of every error answer (`errors()` refers to it)."""
    return obj(
        {
            "error": {"type": "string", "description": "A stable code, e.g. not_found, csrf_failed."},
            "message": {"type": "string", "description": "A sentence for a person."},
        }
    )


def id_parameter(name: str) -> dict:
    """A path parameter holding an id (a session's, a message's, …)."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
    }


def session_id_parameter() -> dict:
    return id_parameter("session_id")


def query(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }
