"""OpenAI-compatible path bench: time to first token through Switchboard for an agent entry
with protocol = "openai" vs a native one, both backed by the SAME reference agent process (it
speaks native /tasks and OpenAI's /v1/chat/completions), and direct to that process in both
protocols, so each path's overhead can be told apart.

    .venv/bin/python bench/openai_path.py [--samples 100] [--tokens 20] [--profile-gateway 300]

A LiveStack (1 gevent worker) whose registry adds {agent_id: "ref-openai", protocol: "openai",
port: <dir-data's port>}. The upstream is fast: @@first_token_ms=0 @@delay_ms=0. Paths, one
each per round (interleaved, so drift in the machine's speed hits all alike):
  direct native   POST /tasks on the agent (requests, stream)
  direct openai   POST /v1/chat/completions on the agent (stream, include_usage)
  via native      POST /api/chat/message agent dir-data, Accept: text/event-stream
  via openai      POST /api/chat/message agent ref-openai, Accept: text/event-stream
First token = the first token event (native, Switchboard) or the first chunk with non-empty
delta.content (direct openai). --profile-gateway N then times the gateway's own handling of
each protocol in this process (TaskStream against the same agent, no Flask): request out,
first event, and a cProfile of N replies' parsing, to show where any difference comes from.
Prints tables; asserts nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares")

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_line, p50_p95_max, sse_messages  # noqa: E402

from services.gateway import open_task  # noqa: E402
from services.gateway.registry import load_registry_file  # noqa: E402
from tests.servers import LiveStack  # noqa: E402
from tests.support import write_registry  # noqa: E402

BACKEND = "dir-data"
MODEL = "ref-fast"
SSE = {"Accept": "text/event-stream"}


class OpenAIStack(LiveStack):
    """The usual stack plus an `openai` entry on the port of one of its reference agents."""

    def _assign_agent_ports(self) -> None:
        super()._assign_agent_ports()  # also on a retry with fresh ports: the entry follows
        backend = next(a for a in self.agents if a["agent_id"] == BACKEND)
        self.agents = [a for a in self.agents if a["agent_id"] != "ref-openai"]
        self.agents.append(
            {
                "agent_id": "ref-openai",
                "name": "Ref OpenAI",
                "parent_role": "architect",
                "protocol": "openai",
                "port": backend["port"],
            }
        )
        write_registry(self.registry_path, self.agents)


def first_token(response, started, openai: bool):
    """Seconds from `started` to the first token, and the number of tokens, of one stream."""
    first, tokens = None, 0
    deadline = time.monotonic() + 30
    for now, message in sse_messages(response, deadline):
        if openai:
            if message.data.strip() == "[DONE]":
                break
            chunk = json.loads(message.data)
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                tokens += 1
                first = first if first is not None else now - started
        elif message.event == "token":
            tokens += 1
            first = first if first is not None else now - started
        elif message.event == "done":
            break
    response.close()
    return first, tokens


def direct_native(agent_http, base, content, index):
    body = {
        "task_id": f"bench-{time.time_ns()}-{index}",
        "session_id": "bench",
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
    }
    started = time.perf_counter()
    response = agent_http.post(f"{base}/tasks", json=body, stream=True, timeout=(5, 30))
    return first_token(response, started, openai=False)


def direct_openai(agent_http, base, content, _index):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    response = agent_http.post(f"{base}/v1/chat/completions", json=body, stream=True, timeout=(5, 30))
    return first_token(response, started, openai=True)


def via(api, agent_id, content):
    started = time.perf_counter()
    response = api.post(
        "/api/chat/message",
        json={"agent_id": agent_id, "model_id": MODEL, "content": content},
        headers=SSE,
        stream=True,
        timeout=(5, 30),
    )
    return first_token(response, started, openai=False)


def gateway_profile(registry_path, content, samples):
    """The gateway alone, in this process: time to the first token event per protocol, and a
    cProfile of the whole reply's handling (reader + consumer)."""
    registry = load_registry_file(registry_path)
    results = {}
    for agent_id in (BACKEND, "ref-openai"):
        agent = registry.get(agent_id)
        firsts, profiler = [], cProfile.Profile()
        for index in range(samples):
            started = time.perf_counter()
            profiler.enable()
            stream = open_task(
                agent,
                task_id=f"gw-{time.time_ns()}-{index}",
                model_id=MODEL,
                messages=[{"role": "user", "content": content}],
                tick=1.0,
            )
            first = None
            for event in stream:
                if event is not None and event.type == "token" and first is None:
                    first = time.perf_counter() - started
            profiler.disable()
            if first is not None:
                firsts.append(first * 1000)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        results[agent.protocol] = (firsts, out.getvalue())
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument(
        "--profile-gateway",
        type=int,
        default=300,
        help="replies per protocol for the in-process gateway timing (0: skip)",
    )
    args = parser.parse_args()
    print(load_line("start"))
    content = f"Latency probe @@tokens={args.tokens} @@delay_ms=0 @@first_token_ms=0"
    paths = ("direct native", "direct openai", "via Switchboard, native", "via Switchboard, openai")
    results = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as workdir:
        env = {"LOG_LEVEL": "WARNING", "HEARTBEAT_SECONDS": "15"}
        with OpenAIStack(Path(workdir), workers=1, env_overrides=env) as stack:
            api = stack.login()
            agent_http = requests.Session()
            base = stack.agent_url(BACKEND)
            same_process = stack.agent("ref-openai")["port"] == stack.agent(BACKEND)["port"]
            for rounds, keep in ((10, False), (args.samples, True)):  # warm-up first
                for index in range(rounds):
                    row = (
                        direct_native(agent_http, base, content, index),
                        direct_openai(agent_http, base, content, index),
                        via(api, BACKEND, content),
                        via(api, "ref-openai", content),
                    )
                    if keep:
                        for name, value in zip(paths, row):
                            results[name].append(value)
            gateway = (
                gateway_profile(stack.registry_path, content, args.profile_gateway) if args.profile_gateway else {}
            )

    print(
        f"\nTime to first token, {args.samples} rounds, {args.tokens}-token replies, fast upstream "
        f"(same agent process behind both entries: {same_process})"
    )
    print(f"  {'path':28} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'tokens':>7}")
    stats = {}
    for name in paths:
        firsts = [f * 1000 for f, _ in results[name] if f is not None]
        stats[name] = p50_p95_max(firsts)
        tokens = sorted({t for _, t in results[name]})
        print(
            f"  {name:28} {len(firsts):4d} {stats[name][0]:8.2f} {stats[name][1]:8.2f} {stats[name][2]:8.2f} "
            f"{str(tokens):>7}"
        )
    print("\nOverheads (p50 / p95 differences, ms)")
    for label, a, b in (
        ("Switchboard over direct, native", "via Switchboard, native", "direct native"),
        ("Switchboard over direct, openai", "via Switchboard, openai", "direct openai"),
        ("openai vs native, direct", "direct openai", "direct native"),
        ("openai vs native, via Switchboard", "via Switchboard, openai", "via Switchboard, native"),
    ):
        print(f"  {label:36} {stats[a][0] - stats[b][0]:+8.2f} {stats[a][1] - stats[b][1]:+8.2f}")
    for protocol, (firsts, profile) in gateway.items():
        p50, p95, top = p50_p95_max(firsts)
        print(
            f"\nGateway alone (TaskStream in this process), {protocol}: first token p50 {p50:.2f} ms, "
            f"p95 {p95:.2f} ms, max {top:.2f} ms over {len(firsts)} replies; top functions by own time:"
        )
        print("\n".join("    " + line for line in profile.strip().splitlines()[-16:]))
    print("\n" + load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
