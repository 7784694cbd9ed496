"""Sending a message, its reply stream, stopping it, answering approvals, and the sidebar's marks
(chat/api.py, chat/approvals)."""

from __future__ import annotations

from .helpers import (
    ID_MAX,
    IDEMPOTENCY_KEY_MAX,
    errors,
    json_content,
    nullable,
    obj,
    ok,
    query,
    ref,
    session_id_parameter,
)

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


def schemas() -> dict:
    count = {"type": "integer", "minimum": 0}
    return {
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
    }


def paths() -> dict:
    sid = [session_id_parameter()]
    return {
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
    }
