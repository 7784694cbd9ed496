"""Server-Sent Events responses: the JSON event stream of a session's latest run."""

from __future__ import annotations

import json

from flask import Response, current_app, request, stream_with_context
from sqlalchemy import select

from services.gateway.sse import format_sse

from ..errors import MAX_EVENT_ID
from ..extensions import db
from ..models import Run
from ..runs import run_manager

KEEP_ALIVE = ":keep-alive\n\n"
# No-cache and no proxy buffering: each event must reach the browser as it is written. (Nothing
# here compresses responses; a compressor in front of a stream would buffer it the same way.)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def latest_run_id(session_id: str) -> str | None:
    return db.session.scalar(
        select(Run.message_id).where(Run.session_id == session_id).order_by(Run.created_at.desc()).limit(1)
    )


def last_event_id() -> int:
    """The client's Last-Event-ID (the input layer has refused ids that are not one)."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
    try:
        return min(max(int(raw), 0), MAX_EVENT_ID)
    except ValueError:
        return 0


def sse_response(chunks) -> Response:
    return Response(stream_with_context(chunks), mimetype="text/event-stream", headers=SSE_HEADERS)


def json_event_stream(message_id: str | None, after_seq: int) -> Response:
    """tokens, status updates, one usage, done last; ':keep-alive' whenever nothing else went out.

    A client that fell far behind gets a `snapshot` (the text so far, replacing its own); a
    `done` that carries `content` replaces the client's text with the stored reply.
    """
    heartbeat = current_app.config["HEARTBEAT_SECONDS"]
    manager = run_manager()
    db.session.remove()  # release the request's connection before the long-lived part

    def chunks():
        yield "retry: 1000\n\n"
        if message_id is None:
            return
        for batch in manager.subscribe_batches(message_id, after_seq, lambda: heartbeat):
            if batch is None:
                yield KEEP_ALIVE
            else:  # events that arrived together go out in one write
                yield "".join(format_sse(json.dumps(e.data), event=e.type, id=str(e.seq)) for e in batch)

    return sse_response(chunks())
