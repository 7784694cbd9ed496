"""The sessions: list and search, one session with its messages, rename, archive, delete, export and
import (sessions/api.py)."""

from __future__ import annotations

from ..models import MESSAGE_ROLES, MESSAGE_STATUSES, USAGE_MAX_COST_USD, USAGE_MAX_TOKENS
from ..runs.events import MAX_DETAIL_CHARS, MAX_STEP_STATUS_CHARS, MAX_STEPS
from . import attachments
from .helpers import errors, json_content, nullable, obj, ok, query, ref, session_id_parameter


def schemas() -> dict:
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
            "attachments": attachments.exported_attachments(),
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
    }


def paths() -> dict:
    sid = [session_id_parameter()]
    when = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    return {
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
    }
