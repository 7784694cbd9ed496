"""Server-Sent Events responses: the JSON event stream of a session's latest run, and the 202 answer
that points a client at it when a run starts."""

from __future__ import annotations

import json
import time

from flask import Response, current_app, jsonify, request, stream_with_context, url_for
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


def json_event_stream(message_id: str | None, after_seq: int, launch=None) -> Response:
    """tokens, status updates, one usage, done last; ':keep-alive' whenever nothing else went out.

    A client that fell far behind gets a `snapshot` (the text so far, replacing its own); a
    `done` that carries `content` replaces the client's text with the stored reply.
    `launch` (RunManager.launch_later) sends the run to its agent once the headers are out; the
    response's close does it too, for a client that left before the first chunk.
    """
    heartbeat = current_app.config["HEARTBEAT_SECONDS"]
    manager = run_manager()
    db.session.remove()  # release the request's connection before the long-lived part

    def chunks():
        yield "retry: 1000\n\n"
        if launch is not None:
            launch()
        if message_id is None:
            return
        last_output = time.monotonic()

        def until_heartbeat() -> float:
            return max(heartbeat - (time.monotonic() - last_output), 0.001)

        for batch in manager.subscribe_batches(message_id, after_seq, until_heartbeat):
            if batch is None:
                if time.monotonic() - last_output < heartbeat:
                    continue  # a quiet moment before the heartbeat is due (Redis waits 2 s at most)
                yield KEEP_ALIVE
            else:  # events that arrived together go out in one write
                yield "".join(format_sse(json.dumps(e.data), event=e.type, id=str(e.seq)) for e in batch)
            last_output = time.monotonic()

    response = sse_response(chunks())
    if launch is not None:
        response.call_on_close(launch)
    return response


def reply_started(session_id: str, message_id: str, **fields) -> Response:
    """202 Accepted for a run just started (a reply, a summary): its ids, `fields` (e.g.
    user_message_id) and the stream to follow, also in Location."""
    stream_url = url_for("chat_api.stream", session_id=session_id)
    response = jsonify(session_id=session_id, message_id=message_id, **fields, stream_url=stream_url)
    response.status_code = 202
    response.headers["Location"] = stream_url
    return response
