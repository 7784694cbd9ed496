"""Relay benchmark: time to first token and tokens/s, direct vs through Switchboard, and how many
concurrent streams one gunicorn worker holds with its heartbeats on time.

    .venv/bin/python bench/relay.py [--samples 40] [--streams 1000] [--hold 12] [--client-nice -10]
        [--api-only]

Starts its own reference agents and gunicorn (gevent workers) on free loopback ports, with a
throw-away SQLite file, and prints tables. Figures only: nothing here asserts. The first-token
paths: straight to the agent; the API's POST that streams; the API's 202 then its stream; and
the browser's: the composer's form, then the page stream (HTML) its answer connects to.
Once the servers are up, this client takes niceness --client-nice (benchlib.favour_client): it
stands in for a browser on another machine, and at the servers' own priority it often waited
for a core after its token had arrived. `--client-nice 0` measures it that way.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares")  # as in gunicorn.conf.py: no thread-pool DNS

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import psutil  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import CLIENT_NICE, favour_client, percentile  # noqa: E402

from services.gateway.sse import SSEParser  # noqa: E402
from tests.servers import LiveStack  # noqa: E402

AGENT = "dir-code"


def timed_stream(response, started):
    """(seconds to first token, seconds to done, tokens) of an SSE response."""
    parser, first, tokens = SSEParser(), None, 0
    for chunk in response.iter_content(chunk_size=None):
        for message in parser.feed(chunk):
            if message.event == "token":
                tokens += 1
                if first is None:
                    first = time.perf_counter() - started
            elif message.event == "done":
                response.close()
                return first, time.perf_counter() - started, tokens
    return first, time.perf_counter() - started, tokens


def direct_once(stack, session, content, model, index):
    body = {
        "task_id": f"bench-{time.time_ns()}-{index}",
        "session_id": "bench",
        "model": model,
        "messages": [{"role": "user", "content": content}],
    }
    started = time.perf_counter()
    response = session.post(f"{stack.agent_url(AGENT)}/tasks", json=body, stream=True, timeout=30)
    return timed_stream(response, started)


def through_once(api, content, model):
    """POST with Accept: text/event-stream: the reply streams in the POST's own response."""
    started = time.perf_counter()
    response = api.post(
        "/api/chat/message",
        json={"agent_id": AGENT, "model_id": model, "content": content},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=30,
    )
    return timed_stream(response, started)


def through_two_requests_once(api, content, model):
    """The 202 answer, then GET the stream URL: two round trips."""
    started = time.perf_counter()
    sent = api.post("/api/chat/message", json={"agent_id": AGENT, "model_id": model, "content": content}).json()
    response = api.get(sent["stream_url"], headers={"Accept": "text/event-stream"}, stream=True, timeout=30)
    return timed_stream(response, started)


def through_page_once(api, content, model):
    """What the browser does in a chat: the composer's form (htmx), then the page stream its
    answer connects to; until the reply's first words are in a message of that stream (HTML).
    The chat is a new one with one exchange in it, started through the API beforehand (untimed).
    Only the time to the first token is meaningful here (the page renders at most every 150 ms)."""
    first_reply = api.post("/api/chat/message", json={"agent_id": AGENT, "model_id": model, "content": "Hello"})
    session_id = first_reply.json()["session_id"]
    timed_stream(api.get(first_reply.json()["stream_url"], headers={"Accept": "text/event-stream"}, stream=True), 0)
    started = time.perf_counter()
    sent = api.post(
        "/chat/send",
        data={"agent_id": AGENT, "model_id": model, "content": content, "session_id": session_id},
        headers={"HX-Request": "true"},
    )
    stream_url = html.unescape(re.search(r'hx-sse:connect="([^"]+/stream[^"]*)"', sent.text).group(1))
    response = api.get(stream_url, headers={"Accept": "text/event-stream"}, stream=True, timeout=30)
    parser, first, marker = SSEParser(), None, content.split(" @@")[0]
    for chunk in response.iter_content(chunk_size=None):
        for message in parser.feed(chunk):
            if first is None and marker in message.data:
                first = time.perf_counter() - started
            if 'hx-swap-oob="delete"' in message.data:  # the final render
                response.close()
                return first, time.perf_counter() - started, 0
    return first, time.perf_counter() - started, 0


def interleaved(stack, api, content, samples, model="ref-fast", two_requests=True):
    """Each path once per round, so that drift in the machine's speed hits every path alike."""
    agent_session = requests.Session()
    results = {"direct to agent": [], "via Switchboard (POST streams)": []}
    if two_requests:
        results["via Switchboard (202 + GET)"] = []
    for index in range(samples):
        results["direct to agent"].append(direct_once(stack, agent_session, content, model, index))
        results["via Switchboard (POST streams)"].append(through_once(api, content, model))
        if two_requests:
            results["via Switchboard (202 + GET)"].append(through_two_requests_once(api, content, model))
    return [summarise(name, rows) for name, rows in results.items()]


def page_path(stack, api, content, samples, model="ref-fast"):
    """The browser's path, in rounds of its own (each sample starts a chat first, whose work
    would otherwise spill into the API paths' samples), with the direct path beside it."""
    agent_session = requests.Session()
    direct, page = [], []
    for index in range(samples):
        direct.append(direct_once(stack, agent_session, content, model, index))
        page.append(through_page_once(api, content, model))
        time.sleep(0.05)  # the chat's first reply and this one end (stored, final render) first
    return [summarise("direct to agent", direct), summarise("via the page (form + page stream)", page)]


def summarise(name, results):
    ttft = [r[0] * 1000 for r in results if r[0] is not None]
    rates = [r[2] / (r[1] - r[0]) for r in results if r[0] is not None and r[1] > r[0] and r[2] > 1]
    return {
        "path": name,
        "ttft_p50": statistics.median(ttft),
        "ttft_p95": percentile(ttft, 95),
        "tps_p50": statistics.median(rates) if rates else float("nan"),
        "done_p50": statistics.median(r[1] * 1000 for r in results),
    }


def hold_streams(stack, api, count, hold, heartbeat):
    """Open `count` streams of silent runs at once; record every keep-alive's arrival."""
    pool = gevent.pool.Pool(32)
    content = "Hold on @@first_token_ms=600000"
    sessions = pool.map(
        lambda _: api.post("/api/chat/message", json={"agent_id": AGENT, "content": content}).json(), range(count)
    )
    gaps, opened, failures = [], [0], [0]

    def watch(sent):
        try:
            response = api.get(
                sent["stream_url"], headers={"Accept": "text/event-stream"}, stream=True, timeout=(10, heartbeat * 4)
            )
        except requests.RequestException:
            failures[0] += 1
            return
        opened[0] += 1
        last, worst, deadline = time.monotonic(), 0.0, time.monotonic() + hold
        try:
            for chunk in response.iter_content(chunk_size=None):
                if b":keep-alive" in chunk:
                    now = time.monotonic()
                    worst, last = max(worst, now - last), now
                if time.monotonic() >= deadline:
                    break
        except requests.RequestException:
            failures[0] += 1
            return
        finally:
            response.close()
        gaps.append(worst)

    workers = [p for s in stack.servers for p in psutil.Process(s.pid).children()]
    cpu_before, started = sum(sum(p.cpu_times()[:2]) for p in workers), time.monotonic()
    watchers = [gevent.spawn(watch, sent) for sent in sessions]
    gevent.sleep(hold / 2)
    worker_rss = sum(p.memory_info().rss for p in workers)
    gevent.joinall(watchers, timeout=hold + 30)
    # The worker's CPU share while it holds the streams: late heartbeats with the worker near
    # 100 % point at the server, with it well below at the machine (a busy shared VM).
    worker_cpu = (sum(sum(p.cpu_times()[:2]) for p in workers) - cpu_before) / (time.monotonic() - started)
    pool.map(lambda sent: api.post(f"/api/chat/sessions/{sent['session_id']}/cancel"), sessions)
    on_time = sum(1 for gap in gaps if gap <= heartbeat * 1.5)
    return {
        "asked": count,
        "opened": opened[0],
        "held": len(gaps),
        "on_time": on_time,
        "failures": failures[0],
        "gap_p50": percentile(gaps, 50),
        "gap_p95": percentile(gaps, 95),
        "gap_max": max(gaps or [0]),
        "worker_rss_mb": worker_rss / 2**20,
        "worker_cpu_pct": round(worker_cpu * 100, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=12.0, help="seconds each stream is held open")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="HEARTBEAT_SECONDS for the hold test")
    parser.add_argument(
        "--client-nice",
        type=int,
        default=CLIENT_NICE,
        help="this client's niceness once the servers are up (0: the same as theirs; see benchlib.py)",
    )
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="only the first token straight to the agent and through the streaming POST (to compare two trees in turn)",
    )
    parser.add_argument("--keep", help="keep the work folder (database, logs) here instead of a temp dir")
    args = parser.parse_args()

    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cpus)")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.keep or scratch
        Path(workdir).mkdir(parents=True, exist_ok=True)
        env = {"HEARTBEAT_SECONDS": str(args.heartbeat), "LOG_LEVEL": "WARNING"}
        with LiveStack(Path(workdir), workers=1, env_overrides=env) as stack:
            api = stack.login()
            print(favour_client(args.client_nice))
            short = "Latency probe @@tokens=20 @@delay_ms=0 @@first_token_ms=0"
            long = "Throughput probe @@tokens=400 @@delay_ms=0 @@first_token_ms=0"
            if args.api_only:
                interleaved(stack, api, short, 10, two_requests=False)  # warm it
                direct, posted = interleaved(stack, api, short, args.samples, two_requests=False)
                overhead = posted["ttft_p50"] - direct["ttft_p50"]
                print(f"first token p50: direct {direct['ttft_p50']:.2f} ms, via the streaming POST ", end="")
                print(f"{posted['ttft_p50']:.2f} ms (p95 {posted['ttft_p95']:.2f}); overhead {overhead:.2f} ms")
                return 0
            interleaved(stack, api, short, 10)  # warm every path
            rows = interleaved(stack, api, short, args.samples)
            rate_rows = interleaved(stack, api, long, max(args.samples // 4, 5), two_requests=False)
            page_path(stack, api, short, 3)  # warm it
            page_rows = page_path(stack, api, short, max(args.samples // 2, 5))
            print(f"\nTime to first token, {args.samples} samples each (ms)")
            print(f"{'path':34} {'p50':>8} {'p95':>8} {'overhead p50':>13}")
            for row in rows:
                overhead = row["ttft_p50"] - rows[0]["ttft_p50"]
                print(f"{row['path']:34} {row['ttft_p50']:8.2f} {row['ttft_p95']:8.2f} {overhead:13.2f}")
            print(f"\nThe browser's path, {max(args.samples // 2, 5)} samples, in rounds of its own (ms)")
            for row in page_rows:
                overhead = row["ttft_p50"] - page_rows[0]["ttft_p50"]
                print(f"{row['path']:34} {row['ttft_p50']:8.2f} {row['ttft_p95']:8.2f} {overhead:13.2f}")
            # Tokens/s counts from the first token: a first token sent ahead of the rest of its
            # read lowers it while the whole reply arrives sooner; the time to `done` shows that.
            print(
                "\nThroughput, 400-token replies (p50): tokens/s after the first token; ms to the first token and to done"
            )
            for row in rate_rows:
                print(f"{row['path']:34} {row['tps_p50']:10.0f} {row['ttft_p50']:8.2f} {row['done_p50']:8.2f}")
            if not args.streams:
                return 0
            held = hold_streams(stack, api, args.streams, args.hold, args.heartbeat)
            print(
                f"\nConcurrent streams on one gunicorn worker (gevent), heartbeat {args.heartbeat:g} s, "
                f"held {args.hold:g} s"
            )
            print(json.dumps(held, indent=2))
            print(
                f"\n{held['on_time']} of {held['asked']} streams held with every heartbeat on time "
                f"(gap <= {args.heartbeat * 1.5:g} s); worker RSS {held['worker_rss_mb']:.0f} MiB, "
                f"worker CPU {held['worker_cpu_pct']:.0f} % while holding"
            )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
