"""Run engine bench: how much later a subscriber on another worker or host sees a reply's first
token than one on the worker that drives the run, and how fast a stop sent to another host ends
the stream.

    .venv/bin/python bench/run_engine.py [--samples 60] [--cancels 30] [--first-token-ms 150]

Two profiles, each its own LiveStack (reference agents + gunicorn on loopback, throw-away SQLite):
- memory: the default, 1 gevent worker, in-process bus; two subscribers on that one worker;
- redis: REDIS_URL (a throw-away redis-server), 4 workers on server A plus a second gunicorn
  (server B, start_extra_server) on the same database and Redis, standing for another host.

Per sample: POST a message to A (202), then open the JSON stream on A and on B at the same time
(which one connects first alternates; A's stream reuses the POST's connection, hence the driving
worker, on every other sample, and takes a new connection, hence any worker, on the others). The agent waits --first-token-ms before its first token,
so both subscribers are attached and the token is pushed live, not replayed. Time to first token
is counted from the POST. Which worker drives the run is the runs.owner column ("host:pid");
which worker serves A's stream is found by matching the client socket's port against the
workers' connections (psutil). Stop: a subscriber on A follows a long reply; after 5 tokens a
cancel is POSTed to B (to A in the memory profile); we time cancel-sent -> `done {cancelled}`.
Prints tables and the machine's load at start and end; asserts nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares")  # as gunicorn.conf.py does

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import db_rows, load_line, p50_p95_max, sse_messages, worker_pids  # noqa: E402

from tests.redis_server import redis_server  # noqa: E402
from tests.servers import ApiSession, LiveStack  # noqa: E402

AGENT = "dir-code"
MODEL = "ref-fast"
SSE = {"Accept": "text/event-stream"}


def local_port(response) -> int | None:
    try:
        return response.raw._connection.sock.getsockname()[1]
    except AttributeError:
        return None


def follow(api, url, started, first_seen, result, deadline):
    """Read one JSON stream: time of the first token, time of each token by seq, the `done`."""
    try:
        response = api.get(url, headers=SSE, stream=True, timeout=(5, 10))
    except Exception as exc:  # noqa: BLE001 - a failed subscriber is reported, not fatal
        result["error"] = repr(exc)
        first_seen.set()
        return
    result["port"] = local_port(response)
    tokens = result.setdefault("tokens", {})
    try:
        for now, message in sse_messages(response, deadline):
            if message.event == "token":
                tokens[int(message.id)] = now
                if "first" not in result:
                    result["first"] = now - started
                    first_seen.set()
            elif message.event == "done":
                result["done"] = json.loads(message.data)
                result["done_at"] = now
                break
    except Exception as exc:  # noqa: BLE001
        result["error"] = repr(exc)
    finally:
        first_seen.set()
        response.close()


def serving_pid(pids, server_port, client_port) -> int | None:
    """The worker holding the server side of the client's connection."""
    if client_port is None:
        return None
    for pid in pids:
        try:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == server_port and conn.raddr and conn.raddr.port == client_port:
                    return pid
        except psutil.Error:
            continue
    return None


def owner_pid(stack, message_id) -> int | None:
    rows = db_rows(stack.db_path, "SELECT owner FROM runs WHERE message_id = ?", (message_id,))
    if not rows or not rows[0][0]:
        return None
    return int(rows[0][0].rsplit(":", 1)[1])


def first_token_samples(stack, api_a, api_b, a_pids, samples, first_ms):
    """Per sample: {a, b: subscriber results, owner: driving pid, a_pid: pid serving A's stream}."""
    content = f"Run engine probe @@tokens=20 @@delay_ms=20 @@first_token_ms={first_ms:g}"
    rows = []
    for index in range(samples):
        # A's stream reuses the POST's keep-alive connection on even samples, so it is served by
        # the worker that took the POST (the driving one); on odd samples the POST closes its
        # connection and A's stream lands on whichever worker accepts it.
        headers = {"Connection": "close"} if index % 2 else {}
        started = time.perf_counter()
        sent = api_a.post(
            "/api/chat/message",
            json={"agent_id": AGENT, "model_id": MODEL, "content": content},
            headers=headers,
            timeout=10,
        ).json()
        deadline = time.monotonic() + 20
        a, b = {}, {}
        a_first, b_first = gevent.event.Event(), gevent.event.Event()
        jobs = [(api_a, a, a_first), (api_b, b, b_first)]
        if index % 4 >= 2:
            jobs.reverse()  # neither side always connects first
        greenlets = [gevent.spawn(follow, api, sent["stream_url"], started, ev, res, deadline) for api, res, ev in jobs]
        a_first.wait(15)
        b_first.wait(15)
        # Both streams are still open (19 tokens x 20 ms to go): find who serves A's.
        a_pid = serving_pid(a_pids, int(api_a.base_url.rsplit(":", 1)[1]), a.get("port"))
        gevent.joinall(greenlets, timeout=20)
        rows.append({"a": a, "b": b, "owner": owner_pid(stack, sent["message_id"]), "a_pid": a_pid})
    return rows


def cancel_samples(api_a, api_cancel, samples):
    """Seconds from sending the stop (to api_cancel) until A's subscriber sees done cancelled."""
    content = "Stop probe @@tokens=3000 @@delay_ms=20 @@first_token_ms=0"
    latencies, http, statuses = [], [], {}
    for _ in range(samples):
        sent = api_a.post(
            "/api/chat/message", json={"agent_id": AGENT, "model_id": MODEL, "content": content}, timeout=10
        ).json()
        result, seen = {}, gevent.event.Event()
        deadline = time.monotonic() + 30

        def follow_until_done(sent=sent, deadline=deadline, result=result, seen=seen):
            try:
                response = api_a.get(sent["stream_url"], headers=SSE, stream=True, timeout=(5, 10))
                count = 0
                for now, message in sse_messages(response, deadline):
                    if message.event == "token":
                        count += 1
                        if count == 5:
                            seen.set()
                    elif message.event == "done":
                        result["done"], result["at"] = json.loads(message.data), now
                        break
                response.close()
            finally:
                seen.set()

        follower = gevent.spawn(follow_until_done)
        seen.wait(15)
        sent_at = time.perf_counter()
        answer = api_cancel.post(f"/api/chat/sessions/{sent['session_id']}/cancel", timeout=10)
        http.append((time.perf_counter() - sent_at) * 1000)
        follower.join(timeout=20)
        if not follower.dead:
            follower.kill()
        status = result.get("done", {}).get("status", f"no done (cancel HTTP {answer.status_code})")
        statuses[status] = statuses.get(status, 0) + 1
        if status == "cancelled":
            latencies.append((result["at"] - sent_at) * 1000)
    return latencies, http, statuses


def row(label, values):
    p50, p95, top = p50_p95_max(values)
    return f"  {label:44} {len(values):4d} {p50:8.1f} {p95:8.1f} {top:8.1f}"


def per_token_gap(rows, x, y):
    """For every token both subscribers got: receive time on y minus on x (ms)."""
    gaps = []
    for sample in rows:
        tx, ty = sample[x].get("tokens", {}), sample[y].get("tokens", {})
        gaps.extend((ty[seq] - tx[seq]) * 1000 for seq in tx.keys() & ty.keys())
    return gaps


def report_first_tokens(title, rows, redis_profile):
    ms = lambda key: [s[key]["first"] * 1000 for s in rows if "first" in s[key]]  # noqa: E731
    errors = sum(1 for s in rows for k in ("a", "b") if "error" in s[k] or "first" not in s[k])
    print(f"\n{title}: time from POST to first token (ms), {len(rows)} samples, {errors} failed subscribers")
    print(f"  {'subscriber':44} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    if not redis_profile:
        print(row("subscriber 1 (the only worker = driving)", ms("a")))
        print(row("subscriber 2 (the only worker = driving)", ms("b")))
        gaps = per_token_gap(rows, "a", "b")
        print(row("per token: sub 2 minus sub 1 (every token)", gaps))
        return None
    same = [s["a"]["first"] * 1000 for s in rows if "first" in s["a"] and s["a_pid"] and s["a_pid"] == s["owner"]]
    other_worker = [
        s["a"]["first"] * 1000
        for s in rows
        if "first" in s["a"] and s["a_pid"] and s["owner"] and s["a_pid"] != s["owner"]
    ]
    unknown = sum(1 for s in rows if not s["a_pid"] or not s["owner"])
    host_b = ms("b")
    print(row("A, served by the driving worker", same))
    print(row("A, served by another worker of A", other_worker))
    print(row("A, all (may or may not be driving)", ms("a")))
    print(row("B, another host (never driving)", host_b))
    print(
        row(
            "paired per sample: B minus A",
            [(s["b"]["first"] - s["a"]["first"]) * 1000 for s in rows if "first" in s["a"] and "first" in s["b"]],
        )
    )
    print(row("per token: B minus A (every token)", per_token_gap(rows, "a", "b")))
    on_driver = [
        (s["b"]["first"] - s["a"]["first"]) * 1000
        for s in rows
        if "first" in s["a"] and "first" in s["b"] and s["a_pid"] and s["a_pid"] == s["owner"]
    ]
    print(row("paired, A on driving worker: B minus A", on_driver))
    if unknown:
        print(f"  ({unknown} samples where the driving or serving worker could not be identified)")
    others = other_worker + host_b
    if same and others:
        s50, s95, _ = p50_p95_max(same)
        o50, o95, _ = p50_p95_max(others)
        print(
            f"  other worker/host vs driving worker: p50 {o50 - s50:+.1f} ms (target <= +5), "
            f"p95 {o95 - s95:+.1f} ms (target <= +15)"
        )
    return same, others


def report_cancels(title, latencies, http, statuses):
    print(f"\n{title}: stop sent -> `done {{status: cancelled}}` seen by the subscriber (ms)")
    print(f"  {'measure':44} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    print(row("cancel sent -> done cancelled on A", latencies))
    print(row("cancel POST round trip", http))
    print(f"  endings: {statuses}  (target: p95 <= 100 ms)")


def run_profile(name, workdir, samples, cancels, first_ms, redis_url=None):
    env = {"LOG_LEVEL": "WARNING", "HEARTBEAT_SECONDS": "5"}
    workers = 4 if redis_url else 1
    with LiveStack(Path(workdir), workers=workers, env_overrides=env, redis_url=redis_url) as stack:
        api_a = stack.login()
        if redis_url:
            url_b = stack.start_extra_server()
            api_b = ApiSession(url_b, stack.username, stack.password)
        else:
            api_b = stack.login()  # a second subscriber on the one worker
        a_pids = worker_pids(stack.servers[0])
        first_token_samples(stack, api_a, api_b, a_pids, 5, first_ms)  # warm-up, not reported
        rows = first_token_samples(stack, api_a, api_b, a_pids, samples, first_ms)
        label = f"{name} ({workers} worker{'s' if workers > 1 else ''}{' + server B' if redis_url else ''})"
        report_first_tokens(label, rows, bool(redis_url))
        latencies, http, statuses = cancel_samples(api_a, api_b, cancels)
        report_cancels(
            f"{label}, stop sent to {'server B' if redis_url else 'the same worker'}", latencies, http, statuses
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--cancels", type=int, default=30)
    parser.add_argument(
        "--first-token-ms",
        type=float,
        default=150.0,
        help="the agent's wait before its first token (both subscribers attach meanwhile)",
    )
    parser.add_argument("--profile", choices=("both", "memory", "redis"), default="both")
    args = parser.parse_args()
    print(load_line("start"))
    if args.profile in ("both", "memory"):
        with tempfile.TemporaryDirectory() as workdir:
            run_profile("memory bus", workdir, args.samples, args.cancels, args.first_token_ms)
    if args.profile in ("both", "redis"):
        with redis_server() as url, tempfile.TemporaryDirectory() as workdir:
            run_profile("redis bus", workdir, args.samples, args.cancels, args.first_token_ms, redis_url=url)
    print("\n" + load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
