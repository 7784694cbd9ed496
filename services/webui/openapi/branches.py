"""Conversation control (chat/branch_api.py): the current path, regenerate, retry, continue, edit,
switch and branch."""

from __future__ import annotations

from ..models import MESSAGE_ROLES, MESSAGE_STATUSES
from .helpers import errors, id_parameter, json_content, nullable, obj, ok, ref, session_id_parameter


def schemas() -> dict:
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


def paths() -> dict:
    sid = [session_id_parameter()]
    mid = sid + [id_parameter("message_id")]
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
