"""The JSON API's contract: an OpenAPI 3.1 description, served at GET /api/openapi.json.

Written as data, by hand, next to the code it describes; tests/webui/test_openapi.py keeps it in
step with the URL map (every JSON route described, nothing described that does not exist) and
tests/webui/test_api_fuzz.py fuzzes the live app against it with Schemathesis. It needs a login,
like every route under /api/.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .errors import MAX_JSON_DEPTH, MAX_SAFE_INTEGER
from .models import MESSAGE_ROLES, MESSAGE_STATUSES, USAGE_MAX_COST_USD, USAGE_MAX_TOKENS, USER_ROLES
from .runs.events import MAX_DETAIL_CHARS, MAX_STEP_STATUS_CHARS, MAX_STEPS

bp = Blueprint("openapi", __name__)

ID_MAX = 36  # session and message ids are UUIDs; longer ones are never found
IDEMPOTENCY_KEY_MAX = 128


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(document(current_app.config["SESSION_COOKIE_NAME"]))


# ---- building blocks ----------------------------------------------------------------------------


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


def session_id_parameter() -> dict:
    return {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
    }


def query(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


STREAM = {
    "description": "Server-Sent Events: `token`, `status_update` (with `approval` when the agent asks for one), "
    "`approval` (the decision on it), `usage` (once) and `done` (always last), "
    "each with `id:` (send it back as Last-Event-ID to resume) and JSON `data:`; "
    "`:keep-alive` comments in between. Ends after `done`.",
    # The schema of one event, as Schemathesis validates each event of a stream.
    "content": {
        "text/event-stream": {
            "schema": obj(
                {
                    "event": {"enum": ["token", "status_update", "approval", "usage", "done"]},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                }
            )
        }
    },
}


# ---- schemas ------------------------------------------------------------------------------------


def schemas() -> dict:
    from .attachments import api_doc as attachments_doc

    timestamp = {"type": "string", "format": "date-time"}
    optional_timestamp = nullable(timestamp)
    count = {"type": "integer", "minimum": 0}
    usage = nullable(
        {
            "type": "object",
            "description": "What the agent reported; numbers no arithmetic can use are left out when shown.",
            "properties": {
                "prompt_tokens": {"type": "integer", "minimum": 0, "maximum": USAGE_MAX_TOKENS},
                "completion_tokens": {"type": "integer", "minimum": 0, "maximum": USAGE_MAX_TOKENS},
                "total_tokens": {"type": "integer", "minimum": 0, "maximum": USAGE_MAX_TOKENS},
                "cost_usd": {"type": "number", "minimum": 0, "maximum": USAGE_MAX_COST_USD},
                "estimated": {"type": "boolean", "description": "Counted by Switchboard: the agent reported none."},
                "reached_agent": {
                    "type": "boolean",
                    "description": "false: the request never reached the agent, so the reply costs nothing.",
                },
            },
        }
    )
    run = nullable(
        obj(
            {
                "agent_id": {"type": "string"},
                "model_id": {"type": "string"},
                "created_at": timestamp,
                "ended_at": optional_timestamp,
                "cancel_requested_at": optional_timestamp,
            },
            required=["agent_id", "model_id", "created_at"],
        )
    )

    def tally(key: str | None = None, meaning: str = "") -> dict:
        numbers = {
            "replies": count,
            "prompt_tokens": count,
            "completion_tokens": count,
            "cost_usd": {"type": "number", "minimum": 0},
        }
        return obj({key: {"type": "string", "description": meaning}, **numbers} if key else numbers)

    exported_approval = obj(
        {
            "approval_id": {"type": "string"},
            "title": {"type": "string"},
            "detail": {"type": "string"},
            "requested_at": timestamp,
            "decision": nullable({"enum": ["approve", "reject"]}),
            "comment": nullable({"type": "string"}),
            "decided_by": nullable({"type": "string", "description": "The username of who answered."}),
            "decided_at": optional_timestamp,
        },
        required=["approval_id", "title", "requested_at", "decision"],
    )
    exported_message = obj(
        {
            "id": {"type": "string"},
            "role": {"enum": list(MESSAGE_ROLES)},
            "message_type": {"type": "string"},
            "agent_id": nullable({"type": "string"}),
            "content": {"type": "string"},
            "status": {"enum": list(MESSAGE_STATUSES)},
            "usage": usage,
            "model_id": nullable({"type": "string", "description": "The model that wrote this reply."}),
            "steps": {
                "type": "array",
                "description": "The reply's timeline: its agent's status updates, oldest first (at most "
                f"{MAX_STEPS}); `at` is the server's time.",
                "maxItems": MAX_STEPS,
                "items": obj(
                    {
                        "status": {"type": "string", "maxLength": MAX_STEP_STATUS_CHARS},
                        "detail": nullable({"type": "string", "maxLength": MAX_DETAIL_CHARS}),
                        "at": optional_timestamp,
                    },
                    required=["status"],
                ),
            },
            "error": nullable({"type": "string"}),
            "created_at": timestamp,
            "completed_at": optional_timestamp,
            "run": run,
            "approvals": {"type": "array", "items": exported_approval},
            "attachments": attachments_doc.exported_attachments(),
        },
        required=["id", "role", "content", "status", "created_at"],
    )
    exported_session = obj(
        {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "agent_id": {"type": "string"},
            "agent_name": {"type": "string"},
            "parent_role": {"type": "string"},
            "model_id": {"type": "string"},
            "created_at": timestamp,
            "updated_at": timestamp,
            "archived_at": optional_timestamp,
        },
        required=["title", "agent_id", "agent_name", "model_id", "created_at", "updated_at"],
    )
    return {
        "Error": obj(
            {
                "error": {"type": "string", "description": "A stable code, e.g. not_found, csrf_failed."},
                "message": {"type": "string", "description": "A sentence for a person."},
            }
        ),
        "Agent": obj(
            {
                "agent_id": {"type": "string"},
                "name": {"type": "string"},
                "parent_role": {"type": "string"},
                "protocol": {"enum": ["native", "openai"]},
                "models": {"type": "array", "items": {"type": "string"}},
                "status": {"enum": ["up", "down"]},
                "reason": nullable({"type": "string"}),
            }
        ),
        "Model": obj(
            {
                "agent_id": {"type": "string"},
                "model_id": {"type": "string"},
                "name": {"type": "string"},
                "context_window": count,
                "cost_per_1m_input": {"type": "number", "minimum": 0},
                "cost_per_1m_output": {"type": "number", "minimum": 0},
                "vision": {"type": "boolean", "description": "Takes images as attachments."},
            }
        ),
        "SendMessage": obj(
            {
                "agent_id": {"type": "string", "description": "An agent of the registry (GET /api/agents)."},
                "content": {
                    "type": "string",
                    "description": "At most MAX_MESSAGE_CHARS characters; may be empty when files are attached.",
                },
                "attachment_ids": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": ID_MAX},
                    "maxItems": 100,
                    "description": "Ids from POST /api/attachments, in order (at most ATTACHMENT_MAX_FILES).",
                },
                "model_id": nullable({"type": "string", "description": "Default: the agent's first model."}),
                "session_id": nullable(
                    {
                        "type": "string",
                        "maxLength": ID_MAX,
                        "description": "Continue this session; omit to start a new one.",
                    }
                ),
                "idempotency_key": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "description": "Same as the Idempotency-Key header: a retry with the same key answers "
                    "with the first send's result instead of sending again.",
                },
            },
            required=["agent_id", "content"],
            examples=[{"agent_id": "architect", "content": "Plan the migration."}],
        ),
        "MessageAccepted": obj(
            {
                "session_id": {"type": "string"},
                "message_id": {"type": "string", "description": "The reply being written."},
                "user_message_id": {"type": "string"},
                "stream_url": {"type": "string", "description": "GET it for the reply's events."},
            }
        ),
        "ApprovalAnswer": obj(
            {
                "decision": {"enum": ["approve", "reject"]},
                "comment": nullable({"type": "string", "maxLength": 2000}),
            },
            required=["decision"],
            examples=[{"decision": "approve", "comment": "Go ahead."}],
        ),
        "ApprovalDecision": obj(
            {
                "message_id": {"type": "string"},
                "approval_id": {"type": "string"},
                "decision": {"enum": ["approve", "reject"]},
                "comment": nullable({"type": "string"}),
                "decided_by": {"type": "string"},
                "decided_at": {"type": "string", "format": "date-time"},
                "delivered": {"type": "boolean", "description": "Whether the agent took it."},
                "message": nullable({"type": "string", "description": "Why the agent did not take it."}),
            }
        ),
        "CancelResult": obj(
            {
                "message_id": {"type": "string"},
                "status": {"type": "string", "description": "`cancelling`, or the final status of a finished reply."},
            }
        ),
        "Attention": obj(
            {
                "sessions": {
                    "type": "array",
                    "items": obj(
                        {
                            "id": {"type": "string"},
                            "title": {"type": "string"},
                            "state": {"enum": ["running", "waiting", "unseen"]},
                            "label": {"type": "string"},
                            "reply_id": {"type": "string"},
                            "url": {"type": "string"},
                        }
                    ),
                    "description": "The recent chats with a mark (unmarked ones are left out).",
                },
                "running": count,
                "waiting": count,
                "unseen": count,
                "attention": {**count, "description": "waiting + unseen: what the tab title counts."},
                "poll_seconds": {"type": "number"},
            }
        ),
        "SessionSummary": obj(
            {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "agent_id": {"type": "string"},
                "agent_name": {"type": "string"},
                "model_id": {"type": "string"},
                "owner": {"type": "string"},
                "created_at": timestamp,
                "updated_at": timestamp,
                "archived_at": optional_timestamp,
                "archived": {"type": "boolean"},
                "live": {"type": "boolean"},
                "last_status": nullable({"enum": list(MESSAGE_STATUSES)}),
                "message_count": count,
                "title_html": nullable({"type": "string", "description": "Escaped title with <mark>s (search only)."}),
                "snippet_html": nullable(
                    {"type": "string", "description": "Escaped excerpt with <mark>s (search only)."}
                ),
                "url": {"type": "string"},
            }
        ),
        "SessionList": obj(
            {
                "sessions": {"type": "array", "items": ref("SessionSummary")},
                "next_cursor": nullable({"type": "string"}),
            }
        ),
        "SessionDetail": obj(
            {
                "session": {
                    **exported_session,
                    "properties": {
                        **exported_session["properties"],
                        "owner": {"type": "string"},
                        "archived": {"type": "boolean"},
                        "live": {"type": "boolean"},
                    },
                },
                "messages": {
                    "type": "array",
                    "items": {
                        **exported_message,
                        "properties": {
                            **exported_message["properties"],
                            "cost_usd": nullable({"type": "number", "minimum": 0}),
                            "cost_estimated": {"type": "boolean"},
                            "outcome": nullable({"type": "string"}),
                        },
                    },
                },
                "totals": obj(
                    {
                        "messages": count,
                        "replies": count,
                        "prompt_tokens": count,
                        "completion_tokens": count,
                        "total_tokens": count,
                        "cost_usd": {"type": "number", "minimum": 0},
                        "cost_estimated": {"type": "boolean"},
                        "duration_seconds": nullable({"type": "number"}),
                        "outcomes": {"type": "object", "additionalProperties": count},
                    }
                ),
            }
        ),
        "SessionExport": obj(
            {
                "format": {"const": "switchboard.session"},
                "version": {"const": 1},
                "exported_at": timestamp,
                "exported_by": {"type": "string"},
                "session": exported_session,
                "messages": {"type": "array", "items": exported_message},
                "totals": {
                    "type": "object",
                    "description": "Sums of the messages' usage; checked on import when present.",
                    "additionalProperties": {"type": "number"},
                },
            },
            required=["format", "version", "session", "messages"],
        ),
        "Imported": obj(
            {
                "session_id": {"type": "string"},
                "title": {"type": "string"},
                "messages": count,
                "url": {"type": "string"},
            }
        ),
        "Usage": obj(
            {
                "from": {"type": "string", "format": "date"},
                "to": {"type": "string", "format": "date"},
                "user": {"type": "string", "description": "all, or the username whose usage this is."},
                "total": tally(),
                "by_day": {"type": "array", "items": tally("key", "The UTC day, YYYY-MM-DD.")},
                "by_agent": {"type": "array", "items": tally("key", "The agent id.")},
                "by_model": {"type": "array", "items": tally("key", "The model id.")},
                "by_user": {"type": "array", "items": tally("key", "The username (admins, everyone's usage).")},
            }
        ),
        "Health": obj(
            {
                "status": {"enum": ["ok", "degraded"]},
                "database": {"enum": ["ok", "unreachable"]},
                "registry": obj({"loaded": {"type": "boolean"}, "agents": count}),
                "agents": {"type": "object", "additionalProperties": {"enum": ["up", "down"]}},
            }
        ),
        "Me": obj(
            {
                "username": {"type": "string"},
                "role": {"enum": list(USER_ROLES)},
                "csrf_token": {"type": "string", "description": "Send it as X-CSRFToken on every write."},
            }
        ),
        **branch_schemas(),
    }


# ---- paths --------------------------------------------------------------------------------------


def paths() -> dict:
    sid = [session_id_parameter()]
    when = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    day = {"type": "string", "format": "date"}
    return {
        "/healthz": {
            "get": {
                "summary": "Is the database reachable, is the registry loaded, which agents are up (public).",
                "security": [],
                "responses": {
                    "200": ok("Everything needed is up.", ref("Health")),
                    "503": ok("The database or the registry is not.", ref("Health")),
                    **errors(400),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This description.",
                "responses": {"200": ok("OpenAPI 3.1.", {"type": "object"}), **errors(400, 401)},
            }
        },
        "/api/me": {
            "get": {
                "summary": "Who is logged in, and the CSRF token for writes.",
                "responses": {"200": ok("The user.", ref("Me")), **errors(400, 401)},
            }
        },
        "/api/agents": {
            "get": {
                "summary": "The agents of the registry with their health.",
                "responses": {
                    "200": ok("Agents.", obj({"agents": {"type": "array", "items": ref("Agent")}})),
                    **errors(400, 401),
                },
            }
        },
        "/api/models": {
            "get": {
                "summary": "The models of every agent, or of one.",
                "parameters": [query("agent_id", "Only this agent's models.")],
                "responses": {
                    "200": ok("Models.", obj({"models": {"type": "array", "items": ref("Model")}})),
                    **errors(400, 401, 404),
                },
            }
        },
        "/api/chat/message": {
            "post": {
                "summary": "Send a message; the reply is written by a run that outlives this request.",
                "description": "The user's message is saved before anything goes to the agent. With "
                "`Accept: text/event-stream` the reply streams in this response; otherwise 202.",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
                        "description": "A retry with the same key does not send twice (or the body's idempotency_key).",
                    }
                ],
                "requestBody": {"required": True, "content": json_content(ref("SendMessage"))},
                "responses": {
                    "200": STREAM,
                    "202": {
                        **ok("Saved; the reply is being written.", ref("MessageAccepted")),
                        "headers": {"Location": {"schema": {"type": "string"}, "description": "The stream URL."}},
                    },
                    **errors(400, 401, 404, 409, 413, 415, 422),
                },
            }
        },
        "/api/chat/stream/{session_id}": {
            "get": {
                "summary": "The events of the session's latest reply: replay after Last-Event-ID, then live.",
                "parameters": sid
                + [
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                    query("last_event_id", "Same as the Last-Event-ID header.", {"type": "string"}),
                ],
                "responses": {"200": STREAM, **errors(400, 401, 404)},
            }
        },
        "/api/chat/sessions/{session_id}/cancel": {
            "post": {
                "summary": "Stop the session's live reply (the agent's task is stopped; the text so far is kept).",
                "parameters": sid,
                "responses": {
                    "200": ok("Nothing was live: the reply's final status.", ref("CancelResult")),
                    "202": ok("Stopping.", ref("CancelResult")),
                    **errors(400, 401, 404, 409),
                },
            }
        },
        "/api/chat/sessions/{session_id}/approvals/{approval_id}": {
            "post": {
                "summary": "Answer the agent's approval request (the session's owner only, once, while the reply is live).",
                "description": "The decision is recorded before the agent is told; a second answer, or one after "
                "the reply ended, is 409. Anyone but the owner (admins included) gets 404.",
                "parameters": sid
                + [
                    {
                        "name": "approval_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                ],
                "requestBody": {"required": True, "content": json_content(ref("ApprovalAnswer"))},
                "responses": {
                    "200": ok("Recorded, and given to the agent (see `delivered`).", ref("ApprovalDecision")),
                    **errors(400, 401, 404, 409, 415, 422),
                },
            }
        },
        "/api/chat/attention": {
            "get": {
                "summary": "Which of the caller's recent chats are running, waiting for approval, or have "
                "a reply that ended since the caller last looked (the sidebar's marks).",
                "responses": {"200": ok("The marks and their counts.", ref("Attention")), **errors(400, 401)},
            }
        },
        "/api/chat/sessions/{session_id}/seen": {
            "post": {
                "summary": "The owner has looked at the session: its ended replies are no longer new.",
                "parameters": sid,
                "responses": {
                    "200": ok(
                        "Seen.",
                        obj({"id": {"type": "string"}, "seen_at": {"type": "string", "format": "date-time"}}),
                    ),
                    **errors(400, 401, 404),
                },
            }
        },
        "/api/chat/sessions": {
            "get": {
                "summary": "The caller's sessions, newest activity first, a page at a time (keyset cursor).",
                "parameters": [
                    query("q", "Full-text search in titles and messages (at most 200 characters)."),
                    query("agent_id", "Only this agent's sessions."),
                    query("model_id", "Only sessions with this model."),
                    query("status", "Status of the latest reply.", {"enum": list(MESSAGE_STATUSES)}),
                    query("archived", "true, false or all (default all)."),
                    query("from", "On or after this date or date-time (1970..9999).", when),
                    query("to", "Before this date-time, or up to the end of this date (1970..9999).", when),
                    query("sort", "updated (default) or created.", {"enum": ["updated", "created"]}),
                    query("user", "Admins only: a username, or all."),
                    query("limit", "1..100, default 25.", {"type": "integer", "minimum": 1, "maximum": 100}),
                    query("cursor", "next_cursor of the previous page."),
                ],
                "responses": {"200": ok("A page.", ref("SessionList")), **errors(400, 401, 403)},
            }
        },
        "/api/usage": {
            "get": {
                "summary": "What replies cost, by day (UTC), agent, model and (admins, everyone's) user.",
                "description": "Sums of each reply's usage; a reply that never reached its agent counts "
                "with zero tokens and $0. The same numbers as CSV rows at GET /usage.csv.",
                "parameters": [
                    query("from", "First UTC day, inclusive (default: 29 days before `to`).", day),
                    query("to", "Last UTC day, inclusive (default: today). At most 731 days in all.", day),
                    query("user", "Admins: a username, or all (the default). Others: only their own."),
                ],
                "responses": {"200": ok("The totals.", ref("Usage")), **errors(400, 401, 403)},
            }
        },
        "/api/chat/sessions/{session_id}": {
            "get": {
                "summary": "The session with its messages, per-message usage and cost, and totals.",
                "parameters": sid,
                "responses": {"200": ok("The session.", ref("SessionDetail")), **errors(400, 401, 404)},
            },
            "patch": {
                "summary": "Rename.",
                "parameters": sid,
                "requestBody": {
                    "required": True,
                    "content": json_content(obj({"title": {"type": "string", "minLength": 1, "maxLength": 200}})),
                },
                "responses": {
                    "200": ok("Renamed.", obj({"id": {"type": "string"}, "title": {"type": "string"}})),
                    **errors(400, 401, 404, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Delete the session and everything in it.",
                "parameters": sid,
                "responses": {
                    "200": ok("Deleted.", obj({"id": {"type": "string"}, "deleted": {"const": True}})),
                    **errors(400, 401, 404, 409),
                },
            },
        },
        "/api/chat/sessions/{session_id}/archive": {
            "post": {
                "summary": "Archive (read-only, leaves the sidebar).",
                "parameters": sid,
                "responses": {
                    "200": ok(
                        "Archived.",
                        obj(
                            {
                                "id": {"type": "string"},
                                "archived": {"const": True},
                                "archived_at": {"type": "string", "format": "date-time"},
                            }
                        ),
                    ),
                    **errors(400, 401, 404, 409),
                },
            }
        },
        "/api/chat/sessions/{session_id}/unarchive": {
            "post": {
                "summary": "Unarchive.",
                "parameters": sid,
                "responses": {
                    "200": ok(
                        "Active again.",
                        obj({"id": {"type": "string"}, "archived": {"const": False}, "archived_at": {"type": "null"}}),
                    ),
                    **errors(400, 401, 404),
                },
            }
        },
        "/api/chat/sessions/{session_id}/export": {
            "get": {
                "summary": "Download the session: complete JSON (re-importable) or readable Markdown.",
                "parameters": sid + [query("format", "json (default) or md.")],
                "responses": {
                    "200": {
                        "description": "An attachment.",
                        "content": {
                            "application/json": {"schema": ref("SessionExport")},
                            "text/markdown": {"schema": {"type": "string"}},
                        },
                    },
                    **errors(400, 401, 404),
                },
            }
        },
        "/api/chat/sessions/import": {
            "post": {
                "summary": "Import a JSON export as a new session of the caller (all or nothing).",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("SessionExport")},
                        "multipart/form-data": {
                            "schema": obj(
                                {
                                    "file": {"type": "string", "contentMediaType": "application/json"},
                                }
                            )
                        },
                    },
                },
                "responses": {
                    "201": {
                        **ok("Imported.", ref("Imported")),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **errors(400, 401, 413, 415, 422),
                },
            }
        },
        **branch_paths(sid),
    }


# ---- conversation control (chat/branch_api.py) ---------------------------------------------------


def branch_schemas() -> dict:
    item = obj(
        {
            "id": {"type": "string"},
            "parent_id": nullable({"type": "string"}),
            "role": {"enum": list(MESSAGE_ROLES)},
            "message_type": {"type": "string", "description": "`chat`, or `handoff` (another chat's transcript)."},
            "status": {"enum": list(MESSAGE_STATUSES)},
            "model_id": nullable({"type": "string", "description": "The model that wrote a reply."}),
            "content": {"type": "string"},
            "sibling_ids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Same parent and role, oldest first.",
            },
            "position": {"type": "integer", "minimum": 1, "description": "1-based place among the siblings."},
            "count": {"type": "integer", "minimum": 1},
        }
    )
    return {
        "ConversationPath": obj(
            {
                "session_id": {"type": "string"},
                "current_leaf_id": nullable({"type": "string"}),
                "messages": {"type": "array", "items": item, "description": "The current path, first message first."},
            }
        ),
        "ReplyStarted": obj(
            {
                "session_id": {"type": "string"},
                "message_id": {"type": "string", "description": "The new reply being written."},
                "user_message_id": nullable({"type": "string", "description": "The edited message (edit only)."}),
                "stream_url": {"type": "string"},
            }
        ),
        "Branched": obj(
            {
                "session_id": {"type": "string"},
                "agent_id": {"type": "string"},
                "handoff": {
                    "type": "boolean",
                    "description": "Another agent: one handoff message with the transcript.",
                },
                "url": {"type": "string"},
            }
        ),
    }


def branch_paths(sid: list) -> dict:
    mid = sid + [
        {
            "name": "message_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
        }
    ]
    model_body = obj({"model_id": {"type": "string", "description": "A model of the session's agent."}}, required=[])
    prefix = "/api/chat/sessions/{session_id}/messages/{message_id}"

    def starts(summary: str, body: dict | None = None, required: bool = False) -> dict:
        operation = {
            "summary": summary,
            "parameters": mid,
            "responses": {
                "202": {
                    **ok("The new reply is being written.", ref("ReplyStarted")),
                    "headers": {"Location": {"schema": {"type": "string"}, "description": "The stream URL."}},
                },
                **errors(400, 401, 404, 409, 413, 415, 422),
            },
        }
        if body is not None:
            operation["requestBody"] = {"required": required, "content": json_content(body)}
        return {"post": operation}

    return {
        "/api/chat/sessions/{session_id}/path": {
            "get": {
                "summary": "The session's current path, each message with its place among its siblings.",
                "parameters": sid,
                "responses": {"200": ok("The path.", ref("ConversationPath")), **errors(400, 401, 404)},
            }
        },
        prefix + "/regenerate": starts(
            "A new reply to the same message (a sibling), with this or another model.", model_body
        ),
        prefix + "/retry": starts("A reply that failed, was interrupted or was stopped, again with its model."),
        prefix + "/continue": starts("Continue an interrupted or stopped reply: a new reply under it."),
        prefix + "/edit": starts(
            "Edit and resend: a new version of the message beside the old one, and a reply to it.",
            obj(
                {
                    "content": {
                        "type": "string",
                        "minLength": 1,
                        "description": "At most MAX_MESSAGE_CHARS characters.",
                    },
                    "model_id": {"type": "string"},
                },
                required=["content"],
            ),
            required=True,
        ),
        prefix + "/switch": {
            "post": {
                "summary": "Show the branch through this message (its newest leaf); what is sent next follows it.",
                "parameters": mid,
                "responses": {
                    "200": ok("The new current path.", ref("ConversationPath")),
                    **errors(400, 401, 404, 409),
                },
            }
        },
        prefix + "/branch": {
            "post": {
                "summary": "A new chat with the path up to this message: a copy (same agent) or a handoff (another agent).",
                "parameters": mid,
                "requestBody": {
                    "required": False,
                    "content": json_content(
                        obj({"agent_id": {"type": "string"}, "model_id": {"type": "string"}}, required=[])
                    ),
                },
                "responses": {
                    "201": {
                        **ok("The new chat.", ref("Branched")),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **errors(400, 401, 404, 409, 413, 415, 422),
                },
            }
        },
    }


def document(cookie_name: str = "switchboard_session") -> dict:
    """The description, built afresh on each call (nothing shared between requests)."""
    from .attachments import api_doc as attachments_doc
    from .chat.context_openapi import context_paths, context_schemas  # it builds on the helpers above

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
        "paths": {**paths(), **context_paths(), **attachments_doc.paths()},
        "components": {
            "schemas": {**schemas(), **context_schemas(), **attachments_doc.schemas()},
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
