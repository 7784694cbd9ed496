"""The reference agent: one HTTP service speaking docs/agent-protocol.md.

    python -m services.agents.reference --agent-id dir-code [--port 6111] [--registry PATH]

It is a plain WSGI app on gevent's pywsgi, so one process holds thousands of concurrent
streams. Replies and test directives live in replies.py; this module does HTTP, the task
table and the pacing. Waits are on a per-task gevent Event, so a cancel lands at once.

The same process also speaks OpenAI's streaming `POST /v1/chat/completions` (same replies,
same directives, taken from the last user message), so one process can stand behind both a
native and an `openai` agent entry: the two paths can then be compared on equal terms.
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import OrderedDict  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

from services.agents.replies import parse_directives, reply_tokens  # noqa: E402
from services.gateway.registry import DEFAULT_REGISTRY_PATH, Agent, Model, RegistryError, load_registry_file  # noqa: E402
from services.gateway.sse import format_sse  # noqa: E402

MAX_BODY_BYTES = 1_000_000
MAX_REMEMBERED_TASKS = 5000
_TASK_PATH = re.compile(r"^/tasks/([^/]+)(/cancel)?$")
_ROLES = ("system", "user", "assistant", "tool")
_MALFORMED = (
    "event: token\ndata: {this is not json\n\n",
    'event: mystery\ndata: {"text": "an event type nobody knows"}\n\n',
    'data: {"text": "a message without an event name"}\n\n',
    'event: token\ndata: ["not", "an", "object"]\n\n',
    ": a comment line, which every client must ignore\n\n",
)
DEFAULT_MODELS = (
    Model("ref-standard", "Reference Standard", 32768, 3.0, 15.0),
    Model("ref-fast", "Reference Fast", 8192, 0.25, 1.25),
    Model("ref-large", "Reference Large", 131072, 15.0, 75.0),
)


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Task:
    task_id: str
    session_id: str
    model: str
    status: str = "running"
    tokens_sent: int = 0
    chars_sent: int = 0  # of token text: lets a test check a client got exactly what was sent
    started_at: str = field(default_factory=_iso_now)
    stopped_at: str | None = None
    cancel: Event = field(default_factory=Event)

    def stop(self, status: str) -> None:
        if self.status == "running":
            self.status, self.stopped_at = status, _iso_now()

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "session_id": self.session_id,
            "model": self.model,
            "status": self.status,
            "tokens_sent": self.tokens_sent,
            "chars_sent": self.chars_sent,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
        }


class _Crash(Exception):
    """Raised inside a stream to drop the connection without a done event."""


class ReferenceAgent:
    """The WSGI application for one agent of the registry."""

    def __init__(self, agent: Agent, parent_name: str | None = None):
        self.agent = agent
        self.parent_name = parent_name
        self.tasks: OrderedDict[str, Task] = OrderedDict()

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/health":
            if method != "GET":
                return _json(start_response, 405, {"error": "use GET"})
            return _json(
                start_response,
                200,
                {
                    "status": "ok",
                    "agent_id": self.agent.agent_id,
                    "name": self.agent.name,
                    "models": [m.model_id for m in self.agent.models],
                    "running_tasks": sum(t.status == "running" for t in self.tasks.values()),
                },
            )
        if path == "/tasks":
            if method != "POST":
                return _json(start_response, 405, {"error": "use POST"})
            return self._start_task(environ, start_response)
        if path == "/v1/chat/completions":
            if method != "POST":
                return _openai_error(start_response, 405, "use POST")
            return self._start_completion(environ, start_response)
        match = _TASK_PATH.match(path)
        if match:
            task = self.tasks.get(match.group(1))
            if match.group(2):
                if method != "POST":
                    return _json(start_response, 405, {"error": "use POST"})
                if task is None:
                    return _json(start_response, 404, {"error": "unknown task"})
                if task.status == "running":
                    task.cancel.set()
                    return _json(start_response, 200, {"task_id": task.task_id, "status": "cancelling"})
                return _json(start_response, 200, {"task_id": task.task_id, "status": task.status})
            if method != "GET":
                return _json(start_response, 405, {"error": "use GET"})
            if task is None:
                return _json(start_response, 404, {"error": "unknown task"})
            return _json(start_response, 200, task.to_dict())
        return _json(start_response, 404, {"error": "no such endpoint"})

    def _start_task(self, environ, start_response):
        body, problem = _read_json(environ)
        if problem is None:
            problem = _task_problem(body)
        if problem:
            return _json(start_response, 413 if "too large" in problem else 400, {"error": problem})
        model = self.agent.model(body["model"])
        if model is None:
            return _json(start_response, 404, {"error": f"unknown model '{body['model']}'"})
        if body["task_id"] in self.tasks:
            return _json(start_response, 409, {"error": f"task '{body['task_id']}' already exists"})
        task = Task(body["task_id"], body["session_id"], model.model_id)
        self._remember(task)
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("X-Accel-Buffering", "no"),
            ],
        )
        return self._stream(task, model, body["messages"], environ.get("switchboard.socket"))

    def _remember(self, task: Task) -> None:
        self.tasks[task.task_id] = task
        if len(self.tasks) > MAX_REMEMBERED_TASKS:
            for task_id, old in list(self.tasks.items()):
                if old.status != "running":
                    del self.tasks[task_id]
                if len(self.tasks) <= MAX_REMEMBERED_TASKS * 0.9:
                    break

    def _stream(self, task: Task, model: Model, messages: list[dict], sock):
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        knobs, cleaned = parse_directives(last_user, model.model_id)
        tokens = reply_tokens(knobs, cleaned, self.agent.name, self.agent.agent_id, self.parent_name, messages)
        prompt_tokens = math.ceil(sum(len(m["content"]) for m in messages) / 4)

        def usage(completion: int) -> bytes:
            return _event(
                "usage",
                {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                    "cost_usd": model.cost_usd(prompt_tokens, completion),
                },
            )

        def cancelled(wait_ms: float) -> bool:
            return wait_ms > 0 and task.cancel.wait(wait_ms / 1000.0) or task.cancel.is_set()

        try:
            if task.cancel.is_set():
                raise _Cancelled
            yield _event(
                "status_update", {"status": "planning", "detail": f"{self.agent.name} is reading the request."}
            )
            if knobs.usage == "early":
                yield usage(len(tokens))
            if cancelled(knobs.first_token_ms / 2):
                raise _Cancelled
            yield _event("status_update", {"status": "executing", "detail": f"{self.agent.name} is writing the reply."})
            if knobs.status:
                yield _event("status_update", {"status": knobs.status, "detail": "Requested by a test directive."})
            if cancelled(knobs.first_token_ms / 2):
                raise _Cancelled
            for index, text in enumerate(tokens):
                if index and cancelled(knobs.delay_ms):
                    raise _Cancelled
                if knobs.malformed and index % 3 == 0:
                    yield _MALFORMED[(index // 3) % len(_MALFORMED)].encode()
                yield _event("token", {"text": text})
                task.tokens_sent += 1
                task.chars_sent += len(text)
                if knobs.crash_after is not None and task.tokens_sent >= knobs.crash_after:
                    raise _Crash
                if knobs.stall_after is not None and task.tokens_sent == knobs.stall_after:
                    if cancelled(knobs.stall_ms):
                        raise _Cancelled
            if knobs.usage != "none":
                yield usage(task.tokens_sent)
            if knobs.error:
                task.stop("error")
                yield _event("done", {"status": "error", "error": knobs.error})
            else:
                task.stop("complete")
                yield _event("done", {"status": "complete"})
        except _Cancelled:
            task.stop("cancelled")
            yield usage(task.tokens_sent)
            yield _event("done", {"status": "cancelled"})
        except _Crash:
            task.stop("crashed")
            _drop_connection(sock)
        finally:
            # The client went away (pywsgi closed this generator) or anything else: the
            # task is over either way, and GET /tasks/{id} must say it stopped.
            task.stop("cancelled")

    # ---- OpenAI-compatible endpoint ---------------------------------------------------------

    def _start_completion(self, environ, start_response):
        body, problem = _read_json(environ)
        if problem is None:
            problem = _completion_problem(body)
        if problem:
            return _openai_error(start_response, 413 if "too large" in problem else 400, problem)
        model = self.agent.model(body["model"])
        if model is None:
            return _openai_error(start_response, 404, f"The model '{body['model']}' does not exist.", "model_not_found")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        task = Task(completion_id, "", model.model_id)
        self._remember(task)
        if not body.get("stream"):
            return self._whole_completion(task, model, body["messages"], start_response)
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("X-Accel-Buffering", "no"),
            ],
        )
        return self._completion_stream(
            task, model, body["messages"], bool(options.get("include_usage")), environ.get("switchboard.socket")
        )

    def _completion_stream(self, task: Task, model: Model, messages: list[dict], include_usage: bool, sock):
        """chat.completion.chunk messages paced like the native stream; a closed connection is
        the only stop (pywsgi closes this generator, and the task is marked cancelled)."""
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        knobs, cleaned = parse_directives(last_user, model.model_id)
        tokens = reply_tokens(knobs, cleaned, self.agent.name, self.agent.agent_id, self.parent_name, messages)
        prompt_tokens = math.ceil(sum(len(m["content"]) for m in messages) / 4)
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
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
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
                    raise _Crash
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
        except _Crash:
            task.stop("crashed")
            _drop_connection(sock)
        finally:
            task.stop("cancelled")

    def _whole_completion(self, task: Task, model: Model, messages: list[dict], start_response):
        """stream: false: the whole reply at once (no pacing: nothing watches it arrive)."""
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        knobs, cleaned = parse_directives(last_user, model.model_id)
        tokens = reply_tokens(knobs, cleaned, self.agent.name, self.agent.agent_id, self.parent_name, messages)
        prompt_tokens = math.ceil(sum(len(m["content"]) for m in messages) / 4)
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


class _Cancelled(Exception):
    pass


def _event(event_type: str, data: dict) -> bytes:
    return format_sse(json.dumps(data, ensure_ascii=False), event=event_type).encode("utf-8")


def _data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def _openai_error(start_response, status: int, message: str, code: str | None = None):
    return _json(start_response, status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})


def _completion_problem(body) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' must be a non-empty string"
    return _messages_problem(body.get("messages"))


def _messages_problem(messages) -> str | None:
    """What is wrong with a request's `messages` (both protocols carry the same list), if anything."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in _ROLES
            or not isinstance(message.get("content"), str)
        ):
            return f"message #{index + 1} needs a role ({', '.join(_ROLES)}) and a string content"
    return None


def _json(start_response, status: int, payload: dict):
    reasons = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        413: "Payload Too Large",
    }
    body = json.dumps(payload).encode("utf-8")
    start_response(
        f"{status} {reasons[status]}", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _read_json(environ) -> tuple[dict | None, str | None]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None, "Content-Length is not a number"
    if length > MAX_BODY_BYTES:
        return None, "the body is too large"
    raw = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return None, "the body is too large"
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, "the body is not JSON"


def _task_problem(body) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for key in ("task_id", "model"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"'{key}' must be a non-empty string"
    if not isinstance(body.get("session_id"), str):
        return "'session_id' must be a string"
    return _messages_problem(body.get("messages"))


def _drop_connection(sock) -> None:
    """Crash on purpose: shut the socket mid-reply so the client sees the body end early."""
    if sock is None:
        raise RuntimeError("no socket to drop")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(WSGIHandler):
    """Exposes the client socket to the app, for the crash directive only."""

    def get_environ(self):
        environ = super().get_environ()
        environ["switchboard.socket"] = self.socket
        return environ


def _raise_fd_limit() -> None:
    # A thousand concurrent streams need more than the usual 1024 descriptors.
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):
        pass


def _exit_with_parent() -> None:
    parent = os.getppid()
    while True:
        gevent.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def resolve_agent(args) -> tuple[Agent, str | None]:
    """The agent to play, from the registry if it lists it; a port on the command line wins."""
    try:
        registry = load_registry_file(args.registry)
    except RegistryError:
        if args.registry != str(DEFAULT_REGISTRY_PATH) or args.port is None:
            raise
        registry = None
    agent = registry.get(args.agent_id) if registry else None
    if agent is None:
        if args.port is None:
            raise RegistryError(f"{args.registry}: there is no agent '{args.agent_id}' and no --port was given.")
        agent = Agent(agent_id=args.agent_id, name=args.agent_id, parent_role="", port=args.port, models=DEFAULT_MODELS)
    overrides = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    if overrides:
        agent = replace(agent, **overrides)
    parent = registry.get(agent.parent_role) if registry and agent.parent_role else None
    return agent, parent.name if parent else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    parser.add_argument("--registry", default=str(DEFAULT_REGISTRY_PATH))
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the process that started this one goes away"
    )
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    try:
        agent, parent_name = resolve_agent(args)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 2
    _raise_fd_limit()
    app = ReferenceAgent(agent, parent_name)
    server = WSGIServer(
        (agent.host, agent.port), app, handler_class=_Handler, backlog=2048, log=sys.stderr if args.access_log else None
    )
    try:
        server.init_socket()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"Agent {agent.agent_id} cannot start: port {agent.port} is already in use.", file=sys.stderr)
            return 3
        raise
    if args.exit_with_parent:
        gevent.spawn(_exit_with_parent)
    print(f"Agent {agent.agent_id} ({agent.name}) listening on {agent.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
