"""Load bench: many replies streaming at once, watched through the page stream and the JSON
stream; does every update arrive on time, and is every reply complete and stored whole?

    .venv/bin/python bench/load.py [--part a|b|both] [--pages 500] [--page-tokens 600]
        [--page-delay-ms 33] [--replies 300] [--reply-tokens 200] [--reply-delay-ms 20]
        [--a-profile memory|redis]

(a) --pages replies at once (default 500 x 600 tokens at 33 ms, ~30 tokens/s each, ~20 s) on the
    default stack (1 gevent worker, memory bus; for comparison, --a-profile redis: 2 workers and
    a throw-away redis-server), each followed through its PAGE stream
    (GET /chat/<session>/stream?message_id=<reply>, HTML). The POSTs are spread over --spread s,
    so all 500 stream at once for ~15 s. (Until 2026-12-02 the default was 150 tokens, 5 s: as
    long as the POSTs' spread, so the replies came and went in a wave, ~250 at once on average
    and 500 only for a moment; `--page-tokens 150` still runs that.)
    - page-update lag: for each page-stream message between the first (whole reply) and the
      final one, the SSE id is the seq of the newest event it includes, which the agent emitted
      at about t0 + seq x pace. The pace is the reply's own (a least-squares fit of receive time
      on seq: the agent's sleeps overshoot under load, so the nominal delay would count the
      agent's slip as lag). offset = receive time - seq x pace; lag = offset - (the reply's
      smallest offset): how much later than its best-delivered update an update arrived. It
      includes the page's render batching (RENDER_INTERVAL, 150 ms) and any uneven slip of the
      agent. A worker falling steadily behind would partly hide in the fitted pace: the
      "reply duration on the page" line (vs the ideal) shows that. Also split by when the update
      arrived: while the POSTs still came (the first --spread s), or after the last one; and
      those that arrived while at least 90 % of the replies were streaming at once (between
      their first and their final page message);
    - update gap: time between consecutive page-stream messages of one reply (staleness);
    - tokens lost: the stored text (messages.content, read from the SQLite file) against the text
      the agent sends (replies.py computes it here too), and whether the final page message
      shows the whole reply (its text contains the rendered expected reply);
    - worker CPU % and RSS (psutil, sampled every second), and "WORKER TIMEOUT" in the log.
(b) --replies replies at once (default 300 x 200 tokens at 20 ms: 15,000 tokens/s in all)
    followed through their JSON streams, on the default stack and on the Redis profile
    (WEB_WORKERS=2 + REDIS_URL, a throw-away redis-server), printed side by side: every reply
    complete, streamed text == stored text == the agent's text, client token gap p50/p95/max
    (target p95 <= 250 ms), tokens/s actually delivered (all tokens received / first POST to
    last `done`) and each reply's duration (ideal: tokens x delay).
Replies are spread round-robin over the three reference agents. The bench client runs on the
same 2 cores as the server and the agents: its own CPU is printed too. Asserts nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares")

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import bisect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from html import unescape  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import db_rows, load_line, p50_p95_max, raise_fd_limit, sse_messages, worker_pids  # noqa: E402

from services.agents.replies import parse_directives, reply_tokens  # noqa: E402
from services.webui.markdown import render_markdown  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402
from tests.servers import LiveStack  # noqa: E402

MODEL = "ref-fast"
SSE = {"Accept": "text/event-stream"}


class Sampler:
    """CPU % and RSS of the gunicorn workers (and of the agents and this client) once a second:
    on a shared 2-core box, a stall is only readable next to who had the CPU."""

    def __init__(self, pids, agent_pids=()):
        self.procs = [psutil.Process(pid) for pid in pids]
        self.agents = [psutil.Process(pid) for pid in agent_pids]
        self.me = psutil.Process()
        self.cpu, self.rss, self.client_cpu, self.agent_cpu, self.machine = [], [], [], [], []
        self._stop = False
        for proc in [*self.procs, *self.agents, self.me]:
            proc.cpu_percent(None)
        psutil.cpu_percent(None)
        self._greenlet = gevent.spawn(self._run)

    def _run(self):
        for _ in range(3600):  # bounded: an hour at most
            gevent.sleep(1.0)
            if self._stop:
                return
            try:
                self.cpu.append(sum(p.cpu_percent(None) for p in self.procs))
                self.rss.append(sum(p.memory_info().rss for p in self.procs))
                self.client_cpu.append(self.me.cpu_percent(None))
                self.agent_cpu.append(sum(p.cpu_percent(None) for p in self.agents))
                self.machine.append(psutil.cpu_percent(None) * (os.cpu_count() or 1))
            except psutil.Error:
                return

    def stop(self):
        self._stop = True
        self._greenlet.join(timeout=3)

    def line(self) -> str:
        """CPU in % of one core (200 = both cores of this VM), p50/p95 of the 1 s samples."""

        def pair(values):
            p50, p95, _ = p50_p95_max(values)
            return f"{p50:.0f}/{p95:.0f}"

        return (
            f"CPU % of a core p50/p95: workers {pair(self.cpu)}, agents {pair(self.agent_cpu)}, "
            f"this client {pair(self.client_cpu)}, whole machine {pair(self.machine)} (of "
            f"{100 * (os.cpu_count() or 1)}); worker RSS max {max(self.rss or [0]) / 2**20:.0f} MiB"
        )


def agent_pids(stack) -> list[int]:
    return [proc.pid for agent in stack.agents[:3] if (proc := stack.fleet.process(agent["agent_id"]))]


def log_problems(log: str) -> str:
    """How many ERROR/Traceback lines the server logged, and the first few distinct ones (a JSON
    line as its message and the last line of its traceback: the exception is what tells)."""
    lines = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line or "Error:" in line]

    def gist(line: str) -> str:
        try:
            record = json.loads(line)
        except ValueError:
            return line
        exc = str(record.get("exc") or "").strip().splitlines()
        return f"{record.get('msg', '')} | {exc[-1] if exc else ''}"

    distinct = list(dict.fromkeys(re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "N", gist(line))[:240] for line in lines))
    return f"{len(lines)} error lines" + "".join(f"\n      {line}" for line in distinct[:4])


def expected_texts(stack, content) -> dict[str, str]:
    """The text each reference agent sends for `content` (replies.py is deterministic)."""
    names = {a["agent_id"]: a["name"] for a in stack.agents}
    texts = {}
    for agent in stack.agents[:3]:
        knobs, cleaned = parse_directives(content, MODEL)
        parent = names.get(agent["parent_role"]) if agent["parent_role"] else None
        texts[agent["agent_id"]] = "".join(reply_tokens(knobs, cleaned, agent["name"], agent["agent_id"], parent))
    return texts


def wide_session(stack):
    """A logged-in session whose pool keeps every concurrent connection (no discarding)."""
    api = stack.login()
    api.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=2000))
    return api


def post(api, agent_id, content, delay_before):
    gevent.sleep(delay_before)
    response = api.post(
        "/api/chat/message", json={"agent_id": agent_id, "model_id": MODEL, "content": content}, timeout=60
    )
    response.raise_for_status()
    return response.json()


def stored(stack, message_ids):
    rows = {}
    ids = list(message_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for mid, content, status in db_rows(
            stack.db_path, f"SELECT id, content, status FROM messages WHERE id IN ({marks})", chunk
        ):
            rows[mid] = (content or "", status)
    return rows


def fitted_pace(points) -> float | None:
    """Least-squares slope of receive time on seq: the reply's actual seconds per event."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_s = sum(s for _, s in points) / n
    var = sum((s - mean_s) ** 2 for _, s in points)
    if var == 0:
        return None
    return sum((s - mean_s) * (t - mean_t) for t, s in points) / var


class StreamingAtOnce:
    """How many replies were streaming at a moment: between their first and final page message."""

    def __init__(self, outs):
        spans = [(u[0][0], u[-1][0]) for u in (o.get("updates") or [] for o in outs) if len(u) >= 2]
        self.starts = sorted(a for a, _ in spans)
        self.ends = sorted(b for _, b in spans)

    def __call__(self, t: float) -> int:
        return bisect.bisect_right(self.starts, t) - bisect.bisect_left(self.ends, t)

    def peak(self, at_least: float) -> tuple[int, float]:
        """The most at once, and the seconds with at least `at_least` at once."""
        moments = sorted([(t, 1) for t in self.starts] + [(t, -1) for t in self.ends])
        count = top = 0
        crowded_seconds, since = 0.0, None
        for t, step in moments:
            count += step
            top = max(top, count)
            if count >= at_least and since is None:
                since = t
            elif count < at_least and since is not None:
                crowded_seconds += t - since
                since = None
        return top, crowded_seconds


def words_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


# ---- (a) page streams --------------------------------------------------------------------------


def page_client(api, agent_id, content, delay_before, deadline, out):
    try:
        sent = post(api, agent_id, content, delay_before)
    except Exception as exc:  # noqa: BLE001 - counted, not fatal
        out["error"] = f"POST: {exc!r}"
        return
    out["sent"] = sent
    url = f"/chat/{sent['session_id']}/stream?message_id={sent['message_id']}"
    updates = out.setdefault("updates", [])  # (receive time, seq) of every message
    try:
        with api.get(url, headers=SSE, stream=True, timeout=(30, 60)) as response:
            for now, message in sse_messages(response, deadline):
                updates.append((now, int(message.id) if message.id and message.id.isdigit() else None))
                if 'hx-swap-oob="delete"' in message.data:
                    out["final"] = message.data
                    return
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"stream: {exc!r}"


def part_a(args, workdir, redis_url=None):
    content = f"Watch the page @@tokens={args.page_tokens} @@delay_ms={args.page_delay_ms:g} @@first_token_ms=0"
    env = {"LOG_LEVEL": "WARNING", "HEARTBEAT_SECONDS": "15"}
    workers = 2 if redis_url else 1
    with LiveStack(Path(workdir), workers=workers, env_overrides=env, redis_url=redis_url) as stack:
        api = wide_session(stack)
        agents = [a["agent_id"] for a in stack.agents[:3]]
        expected = expected_texts(stack, content)
        pids = worker_pids(stack.servers[0])
        ideal = args.page_tokens * args.page_delay_ms / 1000
        deadline = time.monotonic() + args.spread + ideal * 6 + 120
        sampler = Sampler(pids, agent_pids(stack))
        started = time.monotonic()
        outs = [{"agent": agents[i % 3]} for i in range(args.pages)]
        clients = [
            gevent.spawn(page_client, api, out["agent"], content, args.spread * i / args.pages, deadline, out)
            for i, out in enumerate(outs)
        ]
        gevent.joinall(clients, timeout=max(deadline - time.monotonic(), 1) + 10)
        wall = time.monotonic() - started
        sampler.stop()
        rows = stored(stack, [o["sent"]["message_id"] for o in outs if "sent" in o])
        log = stack.server_log()

    delay = args.page_delay_ms / 1000
    lags, gaps, durations, paces = [], [], [], []
    sends_over = started + args.spread
    lags_sending, lags_after = [], []  # by when the update arrived: while POSTs still came, or after
    at_once = StreamingAtOnce(outs)
    crowded = 0.9 * args.pages
    lags_crowded = []  # arrived while at least 90 % of the replies were streaming
    for out in outs:
        updates = [(t, seq) for t, seq in out.get("updates", []) if seq is not None]
        middle = updates[1:-1] if len(updates) > 2 else []  # not the whole-reply first, not the final
        if len(middle) >= 3:
            pace = fitted_pace(middle) or delay
            paces.append(pace * 1000)
            offsets = [t - seq * pace for t, seq in middle]
            best = min(offsets)
            lags.extend((o - best) * 1000 for o in offsets)
            for (t, _seq), o in zip(middle, offsets):
                (lags_sending if t < sends_over else lags_after).append((o - best) * 1000)
                if at_once(t) >= crowded:
                    lags_crowded.append((o - best) * 1000)
        gaps.extend((b[0] - a[0]) * 1000 for a, b in zip(updates, updates[1:]))
        if len(updates) >= 2:
            durations.append(updates[-1][0] - updates[0][0])
    complete = sum(1 for o in outs if "final" in o)
    errors = [o["error"] for o in outs if "error" in o]
    exact = lost_tokens = shows_whole = 0
    expected_tokens = {k: len(re.findall(r"\s*\S+|\s+$", v)) for k, v in expected.items()}
    for out in outs:
        if "sent" not in out:
            lost_tokens += args.page_tokens
            continue
        text, _status = rows.get(out["sent"]["message_id"], ("", None))
        want = expected[out["agent"]]
        if text == want:
            exact += 1
        else:
            got = len(re.findall(r"\s*\S+|\s+$", text)) if want.startswith(text) else 0
            lost_tokens += expected_tokens[out["agent"]] - got
        if "final" in out and words_of(str(render_markdown(want))) in words_of(out["final"]):
            shows_whole += 1
    statuses = {}
    for _text, status in rows.values():
        statuses[status] = statuses.get(status, 0) + 1

    print(
        f"\n(a) {args.pages} replies x {args.page_tokens} tokens at {args.page_delay_ms:g} ms "
        f"(~{1000 / args.page_delay_ms:.0f} tokens/s each, {args.pages * 1000 / args.page_delay_ms:,.0f} in all), "
        f"page streams, {'2 workers + Redis' if redis_url else '1 worker, memory bus'}, "
        f"POSTs over {args.spread:g} s; wall {wall:.1f} s"
    )
    print(f"  {'measure':44} {'n':>7} {'p50':>8} {'p95':>8} {'max':>8}")
    for label, values in (
        ("page-update lag (ms, see docstring)", lags),
        ("  of which while the POSTs came", lags_sending),
        ("  of which after the last POST", lags_after),
        (f"  of which while >= {crowded:.0f} streamed at once", lags_crowded),
        ("page-update gap (ms)", gaps),
        ("reply duration on the page (s)", durations),
        ("fitted agent pace (ms per event)", paces),
    ):
        p50, p95, top = p50_p95_max(values)
        print(f"  {label:44} {len(values):7d} {p50:8.1f} {p95:8.1f} {top:8.1f}")
    peak, crowded_seconds = at_once.peak(crowded)
    print(
        f"  ideal reply duration {ideal:.2f} s (pace {args.page_delay_ms:g} ms); page streams ended with the final message: {complete}/{args.pages}"
    )
    print(
        f"  replies streaming at once (first to final page message): at most {peak}; "
        f">= {crowded:.0f} of them for {crowded_seconds:.1f} s"
    )
    print(
        f"  stored text == agent's text: {exact}/{args.pages}; tokens lost: {lost_tokens}; "
        f"final page message shows the whole reply: {shows_whole}/{args.pages}; statuses {statuses}"
    )
    print(f"  client errors: {len(errors)} {errors[:3]}")
    print(f"  {sampler.line()}")
    print(f"  gunicorn 'WORKER TIMEOUT' lines: {log.count('WORKER TIMEOUT')}; server log: {log_problems(log)}")


# ---- (b) JSON streams --------------------------------------------------------------------------


def json_client(api, agent_id, content, delay_before, deadline, out):
    try:
        sent = post(api, agent_id, content, delay_before)
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"POST: {exc!r}"
        return
    out["sent"] = sent
    parts, times = [], []
    try:
        with api.get(sent["stream_url"], headers=SSE, stream=True, timeout=(30, 60)) as response:
            for now, message in sse_messages(response, deadline):
                if message.event == "token":
                    parts.append(json.loads(message.data)["text"])
                    times.append(now)
                elif message.event == "snapshot":
                    parts[:] = [json.loads(message.data)["text"]]
                    out["snapshots"] = out.get("snapshots", 0) + 1
                elif message.event == "done":
                    done = json.loads(message.data)
                    if isinstance(done.get("content"), str):
                        parts[:] = [done["content"]]
                    out["done"] = done
                    break
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"stream: {exc!r}"
    out["text"], out["times"], out["ended"] = "".join(parts), times, time.perf_counter()


def part_b_profile(args, workdir, redis_url=None):
    content = f"Stream it all @@tokens={args.reply_tokens} @@delay_ms={args.reply_delay_ms:g} @@first_token_ms=0"
    env = {"LOG_LEVEL": "WARNING", "HEARTBEAT_SECONDS": "15"}
    workers = 2 if redis_url else 1
    with LiveStack(Path(workdir), workers=workers, env_overrides=env, redis_url=redis_url) as stack:
        api = wide_session(stack)
        agents = [a["agent_id"] for a in stack.agents[:3]]
        expected = expected_texts(stack, content)
        pids = worker_pids(stack.servers[0])
        ideal = args.reply_tokens * args.reply_delay_ms / 1000
        deadline = time.monotonic() + args.spread_b + ideal * 6 + 120
        sampler = Sampler(pids, agent_pids(stack))
        started, first_post = time.monotonic(), time.perf_counter()
        outs = [{"agent": agents[i % 3]} for i in range(args.replies)]
        clients = [
            gevent.spawn(json_client, api, o["agent"], content, args.spread_b * i / args.replies, deadline, o)
            for i, o in enumerate(outs)
        ]
        gevent.joinall(clients, timeout=max(deadline - time.monotonic(), 1) + 10)
        wall = time.monotonic() - started
        sampler.stop()
        rows = stored(stack, [o["sent"]["message_id"] for o in outs if "sent" in o])
        log = stack.server_log()
    gaps, durations = [], []
    for out in outs:
        times = out.get("times", [])
        gaps.extend((b - a) * 1000 for a, b in zip(times, times[1:]))
        if len(times) >= 2:
            durations.append(times[-1] - times[0])
    received = sum(len(o.get("times", [])) for o in outs)
    busy = max((o["ended"] for o in outs if "ended" in o), default=0) - first_post
    done_complete = sum(1 for o in outs if o.get("done", {}).get("status") == "complete")
    stream_ok = sum(1 for o in outs if o.get("text") == expected[o["agent"]])
    db_ok = sum(1 for o in outs if "sent" in o and rows.get(o["sent"]["message_id"], ("",))[0] == expected[o["agent"]])
    same = sum(1 for o in outs if "sent" in o and rows.get(o["sent"]["message_id"], ("",))[0] == o.get("text"))
    cpu50, cpu95, cpumax = p50_p95_max(sampler.cpu)
    statuses = {}
    for _text, status in rows.values():
        statuses[status] = statuses.get(status, 0) + 1
    dones = {}
    for o in outs:
        key = o.get("done", {}).get("status", "no done")
        dones[key] = dones.get(key, 0) + 1
    errors = list(dict.fromkeys(o["error"][:150] for o in outs if "error" in o))
    label = "redis, 2 workers" if redis_url else "memory, 1 worker"
    print(f"  [{label}] stored statuses {statuses}; stream endings {dones}; {sampler.line()}")
    print(f"  [{label}] client errors (distinct, first 3): {errors[:3]}")
    print(f"  [{label}] server log: {log_problems(log)}")
    return {
        "profile": f"{'redis, 2 workers' if redis_url else 'memory, 1 worker'}",
        "wall s": f"{wall:.1f}",
        "done complete": f"{done_complete}/{args.replies}",
        "streamed == agent text": f"{stream_ok}/{args.replies}",
        "stored == agent text": f"{db_ok}/{args.replies}",
        "stored == streamed": f"{same}/{args.replies}",
        "snapshots received": str(sum(o.get("snapshots", 0) for o in outs)),
        "client errors": str(sum(1 for o in outs if "error" in o)),
        "tokens/s delivered": f"{received / busy:,.0f}" if busy > 0 else "nan",
        "reply duration p50/p95 s": f"{p50_p95_max(durations)[0]:.1f}/{p50_p95_max(durations)[1]:.1f}",
        "token gaps (n)": str(len(gaps)),
        "token gap p50 ms": f"{p50_p95_max(gaps)[0]:.1f}",
        "token gap p95 ms (<= 250)": f"{p50_p95_max(gaps)[1]:.1f}",
        "token gap max ms": f"{p50_p95_max(gaps)[2]:.1f}",
        "workers CPU % p50/p95/max": f"{cpu50:.0f}/{cpu95:.0f}/{cpumax:.0f}",
        "agents CPU % p50/p95": f"{p50_p95_max(sampler.agent_cpu)[0]:.0f}/{p50_p95_max(sampler.agent_cpu)[1]:.0f}",
        "worker RSS max MiB (sum)": f"{max(sampler.rss or [0]) / 2**20:.0f}",
        "client CPU % p50": f"{p50_p95_max(sampler.client_cpu)[0]:.0f}",
        "WORKER TIMEOUT lines": str(log.count("WORKER TIMEOUT")),
    }


def part_b(args):
    columns = []
    if args.profile in ("both", "memory"):
        with tempfile.TemporaryDirectory() as workdir:
            columns.append(part_b_profile(args, workdir))
        print(load_line("after (b) memory"))
    if args.profile in ("both", "redis"):
        with redis_server() as url, tempfile.TemporaryDirectory() as workdir:
            columns.append(part_b_profile(args, workdir, redis_url=url))
    print(
        f"\n(b) {args.replies} replies x {args.reply_tokens} tokens at {args.reply_delay_ms:g} ms "
        f"({args.replies * 1000 / args.reply_delay_ms:,.0f} tokens/s in all), JSON streams, "
        f"POSTs over {args.spread_b:g} s"
    )
    for key in columns[0]:
        print(f"  {key:28} " + " ".join(f"{c[key]:>20}" for c in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--page-tokens", type=int, default=600)
    parser.add_argument("--page-delay-ms", type=float, default=33.0)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which (a)'s POSTs are sent")
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--reply-tokens", type=int, default=200)
    parser.add_argument("--reply-delay-ms", type=float, default=20.0)
    parser.add_argument("--spread-b", type=float, default=3.0, help="seconds over which (b)'s POSTs are sent")
    parser.add_argument("--profile", choices=("both", "memory", "redis"), default="both", help="(b)'s stacks")
    parser.add_argument(
        "--a-profile", choices=("memory", "redis"), default="memory", help="(a)'s stack (the target is on memory)"
    )
    args = parser.parse_args()
    print(f"client file limit: {raise_fd_limit()}")
    print(load_line("start"))
    if args.part in ("a", "both"):
        with tempfile.TemporaryDirectory() as workdir:
            if args.a_profile == "redis":
                with redis_server() as redis_url:
                    part_a(args, workdir, redis_url)
            else:
                part_a(args, workdir)
        print(load_line("after (a)"))
    if args.part in ("b", "both"):
        part_b(args)
    print("\n" + load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
