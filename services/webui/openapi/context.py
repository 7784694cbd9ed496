"""What the agent receives (chat/context_routes.py): the context plan, summaries and fresh contexts."""

from __future__ import annotations

from .helpers import errors, id_parameter, json_content, obj, ok, query, session_id_parameter


def schemas() -> dict:
    count = {"type": "integer", "minimum": 0}
    return {
        "ContextPlan": obj(
            {
                "window": count,
                "reserve": {**count, "description": "Tokens kept free for the reply (CONTEXT_REPLY_RESERVE)."},
                "budget": {**count, "description": "window − reserve: what the history and the new message may use."},
                "used": {**count, "description": "Tokens of the history that would be sent now."},
                "tokenizer": {"type": "string", "description": "The encoding that counted, or `estimate`."},
                "exact": {"type": "boolean", "description": "False: counts are estimated (~4 characters a token)."},
                "cut": obj(
                    {
                        "reason": {"anyOf": [{"enum": ["budget", "summary", "context_reset"]}, {"type": "null"}]},
                        "before_message_id": {
                            "anyOf": [{"type": "string"}, {"type": "null"}],
                            "description": "The first message sent, when messages above it are not.",
                        },
                        "hidden_messages": {**count, "description": "Messages above the cut the agent no longer sees."},
                        "older_unread": {"type": "boolean", "description": "Older messages exist beyond the 200 read."},
                    }
                ),
                "messages": {
                    "type": "array",
                    "items": obj(
                        {
                            "id": {"type": "string"},
                            "role": {"type": "string"},
                            "message_type": {"enum": ["chat", "summary", "context_reset"]},
                            "tokens": {"anyOf": [count, {"type": "null"}]},
                            "sent": {"type": "boolean"},
                        }
                    ),
                },
            }
        ),
    }


def paths() -> dict:
    sid = [session_id_parameter()]
    mid = sid + [id_parameter("message_id")]
    plan_ref = {"$ref": "#/components/schemas/ContextPlan"}
    return {
        "/api/chat/sessions/{session_id}/context": {
            "get": {
                "summary": "What the agent receives with the next message: the window, the reserve, "
                "each message's tokens, which are sent, and where the history is cut.",
                "parameters": sid + [query("model_id", "Plan for this model of the session's agent.")],
                "responses": {"200": ok("The plan.", plan_ref), **errors(400, 401, 404, 409, 422)},
            }
        },
        "/api/chat/sessions/{session_id}/summarize": {
            "post": {
                "summary": "Ask the session's agent for a summary of what it sees; stored as a message of type "
                "`summary`, sent in place of every message before it.",
                "parameters": sid,
                "responses": {
                    "202": {
                        **ok(
                            "The summary is being written (a run: stream and stop it like a reply).",
                            obj(
                                {
                                    "session_id": {"type": "string"},
                                    "message_id": {"type": "string"},
                                    "stream_url": {"type": "string"},
                                }
                            ),
                        ),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **errors(400, 401, 404, 409),
                },
            }
        },
        "/api/chat/sessions/{session_id}/context-reset": {
            "post": {
                "summary": "Start a fresh context: a marker before which nothing is sent to the agent.",
                "parameters": sid,
                "responses": {
                    "201": ok("Stored.", obj({"session_id": {"type": "string"}, "message_id": {"type": "string"}})),
                    **errors(400, 401, 404, 409),
                },
            }
        },
        "/api/chat/sessions/{session_id}/messages/{message_id}": {
            "put": {
                "summary": "Edit a summary's text (only messages of type `summary`).",
                "parameters": mid,
                "requestBody": {
                    "required": True,
                    "content": json_content(obj({"content": {"type": "string", "minLength": 1}})),
                },
                "responses": {
                    "200": ok(
                        "Saved.",
                        obj(
                            {
                                "id": {"type": "string"},
                                "message_type": {"type": "string"},
                                "content": {"type": "string"},
                            }
                        ),
                    ),
                    **errors(400, 401, 404, 409, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Remove a summary or a fresh-context marker: the messages before it are sent again.",
                "parameters": mid,
                "responses": {
                    "200": ok("Removed.", obj({"id": {"type": "string"}, "deleted": {"const": True}})),
                    **errors(400, 401, 404, 409, 422),
                },
            },
        },
    }
