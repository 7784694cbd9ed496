"""The reference agent: one HTTP service speaking docs/agent-protocol.md.

    python -m services.agents.reference --agent-id dir-code [--port 6111] [--registry PATH]

It is a plain WSGI app on gevent's pywsgi, so one process holds thousands of concurrent
streams. Replies and test directives live in replies.py; this module does the routing, the
task table and the pacing of the native stream. Waits are on a per-task gevent Event, so a
cancel lands at once.

The same process also speaks OpenAI's `POST /v1/chat/completions` (openai_endpoint.py), so
one process can stand behind both a native and an `openai` agent entry. The task state is
tasks.py; JSON bodies, their checks and the socket the crash directive drops are http.py.
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from collections import OrderedDict  # noqa: E402
from dataclasses import replace  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from services.agents.approvals import PendingApproval, answer_problem  # noqa: E402
from services.agents.http import (  # noqa: E402
    SocketHandler,
    drop_connection,
    json_answer,
    read_json,
    start_event_stream,
    task_problem,
)
from services.agents.openai_endpoint import openai_error, start_completion  # noqa: E402
from services.agents.replies import tokenize  # noqa: E402
from services.agents.tasks import Crash, Task, plan_reply  # noqa: E402
from services.gateway.registry import DEFAULT_REGISTRY_PATH, Agent, Model, RegistryError, load_registry_file  # noqa: E402
from services.gateway.sse import format_sse  # noqa: E402

MAX_REMEMBERED_TASKS = 5000
_TASK_PATH = re.compile(r"^/tasks/([^/]+)(?:(/cancel)|/approvals/([^/]+))?$")
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
                return json_answer(start_response, 405, {"error": "use GET"})
            return json_answer(
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
                return json_answer(start_response, 405, {"error": "use POST"})
            return self._start_task(environ, start_response)
        if path == "/v1/chat/completions":
            if method != "POST":
                return openai_error(start_response, 405, "use POST")
            return start_completion(self, environ, start_response)
        match = _TASK_PATH.match(path)
        if match:
            task = self.tasks.get(match.group(1))
            if match.group(3):
                if method != "POST":
                    return json_answer(start_response, 405, {"error": "use POST"})
                return self._answer(task, match.group(3), environ, start_response)
            if match.group(2):
                if method != "POST":
                    return json_answer(start_response, 405, {"error": "use POST"})
                if task is None:
                    return json_answer(start_response, 404, {"error": "unknown task"})
                if task.status == "running":
                    task.cancel.set()
                    return json_answer(start_response, 200, {"task_id": task.task_id, "status": "cancelling"})
                return json_answer(start_response, 200, {"task_id": task.task_id, "status": task.status})
            if method != "GET":
                return json_answer(start_response, 405, {"error": "use GET"})
            if task is None:
                return json_answer(start_response, 404, {"error": "unknown task"})
            return json_answer(start_response, 200, task.to_dict())
        return json_answer(start_response, 404, {"error": "no such endpoint"})

    def _answer(self, task: Task | None, approval_id: str, environ, start_response):
        """POST /tasks/{id}/approvals/{approval_id}: the decision on the request it waits on."""
        if task is None:
            return json_answer(start_response, 404, {"error": "unknown task"})
        pending = task.pending
        if pending is None or pending.approval_id != approval_id:
            return json_answer(start_response, 404, {"error": "unknown approval"})
        if pending.decision is not None:
            return json_answer(start_response, 409, {"error": "this approval was already answered"})
        if task.status != "running":
            return json_answer(start_response, 409, {"error": f"the task is over ({task.status})"})
        body, problem = read_json(environ)
        if problem is None:
            problem = answer_problem(body)
        if problem:
            return json_answer(start_response, 400, {"error": problem})
        pending.decision, pending.comment = body["decision"], body.get("comment") or ""
        task.decisions.append({"approval_id": approval_id, "decision": pending.decision, "comment": pending.comment})
        pending.answered.set()
        return json_answer(
            start_response, 200, {"task_id": task.task_id, "approval_id": approval_id, "decision": pending.decision}
        )

    def _start_task(self, environ, start_response):
        body, problem = read_json(environ)
        if problem is None:
            problem = task_problem(body)
        if problem:
            return json_answer(start_response, 413 if "too large" in problem else 400, {"error": problem})
        model = self.agent.model(body["model"])
        if model is None:
            return json_answer(start_response, 404, {"error": f"unknown model '{body['model']}'"})
        if body["task_id"] in self.tasks:
            return json_answer(start_response, 409, {"error": f"task '{body['task_id']}' already exists"})
        task = Task(body["task_id"], body["session_id"], model.model_id)
        self.remember(task)
        start_event_stream(start_response)
        return self._stream(task, model, body["messages"], environ.get("switchboard.socket"))

    def remember(self, task: Task) -> None:
        self.tasks[task.task_id] = task
        if len(self.tasks) > MAX_REMEMBERED_TASKS:
            for task_id, old in list(self.tasks.items()):
                if old.status != "running":
                    del self.tasks[task_id]
                if len(self.tasks) <= MAX_REMEMBERED_TASKS * 0.9:
                    break

    def _stream(self, task: Task, model: Model, messages: list[dict], sock):
        plan = plan_reply(self.agent, self.parent_name, model, messages)
        knobs, cleaned, tokens, prompt_tokens = plan.knobs, plan.cleaned, plan.tokens, plan.prompt_tokens

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
            # gevent.wait, not Event.wait: a stop wakes it just the same, but a wait that runs out
            # costs no Timeout thrown into this greenlet. That was ~10 µs of CPU per token, at
            # 15,000 tokens/s (bench/load.py) about 15 % of a core on the machine the agents share
            # with Switchboard.
            if wait_ms > 0:
                gevent.wait([task.cancel], timeout=wait_ms / 1000.0)
            return task.cancel.is_set()

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
            if knobs.approval:
                task.pending = PendingApproval.new(knobs.approval)
                yield _event("status_update", task.pending.request(self.agent.name, cleaned))
                if not task.pending.wait(task.cancel):
                    raise _Cancelled
                if task.pending.decision == "reject":
                    tokens = tokenize(task.pending.rejected_text())
                else:
                    detail = f"{self.agent.name} was given approval and is writing the reply."
                    yield _event("status_update", {"status": "executing", "detail": detail})
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
                    raise Crash
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
        except Crash:
            task.stop("crashed")
            drop_connection(sock)
        finally:
            # The client went away (pywsgi closed this generator) or anything else: the
            # task is over either way, and GET /tasks/{id} must say it stopped.
            task.stop("cancelled")


class _Cancelled(Exception):
    pass


def _event(event_type: str, data: dict) -> bytes:
    return format_sse(json.dumps(data, ensure_ascii=False), event=event_type).encode("utf-8")


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
        (agent.host, agent.port),
        app,
        handler_class=SocketHandler,
        backlog=2048,
        log=sys.stderr if args.access_log else None,
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
