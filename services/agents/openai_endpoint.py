"""The reference agent's OpenAI-compatible endpoint: `POST /v1/chat/completions`.

Same replies and directives as the native `/tasks` stream (taken from the last user message),
so one process can stand behind both a native and an `openai` agent entry and the two paths
can be compared on equal terms. `stream: true` sends chat.completion.chunk messages paced
like the native stream; `stream: false` sends the whole completion at once.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

import gevent

from services.agents.http import drop_connection, json_answer, messages_problem, read_json, start_event_stream
from services.agents.tasks import Crash, Task, plan_reply
from services.gateway.registry import Model

if TYPE_CHECKING:
    from services.agents.reference import ReferenceAgent


def start_completion(app: ReferenceAgent, environ, start_response):
    body, problem = read_json(environ)
    if problem is None:
        problem = _completion_problem(body)
    if problem:
        return openai_error(start_response, 413 if "too large" in problem else 400, problem)
    model = app.agent.model(body["model"])
    if model is None:
        return openai_error(start_response, 404, f"The model '{body['model']}' does not exist.", "model_not_found")
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    task = Task(completion_id, "", model.model_id)
    app.remember(task)
    if not body.get("stream"):
        return _whole_completion(app, task, model, body["messages"], start_response)
    options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
    start_event_stream(start_response)
    return _completion_stream(
        app, task, model, body["messages"], bool(options.get("include_usage")), environ.get("switchboard.socket")
    )


def _completion_stream(app: ReferenceAgent, task: Task, model: Model, messages: list[dict], include_usage: bool, sock):
    """chat.completion.chunk messages paced like the native stream; a closed connection is
    the only stop (pywsgi closes this generator, and the task is marked cancelled)."""
    plan = plan_reply(app.agent, app.parent_name, model, messages)
    knobs, tokens = plan.knobs, plan.tokens
    created = int(time.time())

    def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
        body = {
            "id": task.task_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model.model_id,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return _data(body)

    def usage(completion: int) -> dict:
        return {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": plan.prompt_tokens + completion,
        }

    try:
        yield chunk({"role": "assistant", "content": ""})
        if knobs.usage == "early" and include_usage:
            yield chunk(None, usage=usage(len(tokens)))
        if knobs.first_token_ms > 0:
            gevent.sleep(knobs.first_token_ms / 1000.0)
        for index, text in enumerate(tokens):
            if index and knobs.delay_ms > 0:
                gevent.sleep(knobs.delay_ms / 1000.0)
            if knobs.malformed and index % 3 == 0:
                yield b"data: {this is not json\n\n"
            yield chunk({"content": text})
            task.tokens_sent += 1
            task.chars_sent += len(text)
            if knobs.crash_after is not None and task.tokens_sent >= knobs.crash_after:
                raise Crash
            if knobs.stall_after is not None and task.tokens_sent == knobs.stall_after and knobs.stall_ms > 0:
                gevent.sleep(knobs.stall_ms / 1000.0)
        if knobs.error:
            task.stop("error")
            yield _data({"error": {"message": knobs.error, "type": "server_error"}})
            return
        yield chunk({}, finish="stop")
        if include_usage and knobs.usage != "none":
            yield chunk(None, usage=usage(task.tokens_sent))
        task.stop("complete")
        yield b"data: [DONE]\n\n"
    except Crash:
        task.stop("crashed")
        drop_connection(sock)
    finally:
        task.stop("cancelled")


def _whole_completion(app: ReferenceAgent, task: Task, model: Model, messages: list[dict], start_response):
    """stream: false: the whole reply at once (no pacing: nothing watches it arrive)."""
    plan = plan_reply(app.agent, app.parent_name, model, messages)
    tokens, prompt_tokens = plan.tokens, plan.prompt_tokens
    task.tokens_sent = len(tokens)
    task.stop("complete")
    body = json.dumps(
        {
            "id": task.task_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.model_id,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": prompt_tokens + len(tokens),
            },
        }
    ).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def openai_error(start_response, status: int, message: str, code: str | None = None):
    return json_answer(
        start_response, status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    )


def _completion_problem(body) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' must be a non-empty string"
    return messages_problem(body.get("messages"))
