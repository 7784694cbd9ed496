"""Page stream bench: what a long reply's HTML stream costs, in bytes on the wire and in server
CPU, against the reply it renders.

    .venv/bin/python bench/page_stream.py [--tokens 4000] [--delay-ms 2] [--reps 3] [--idle 5]

One LiveStack (reference agents + 1 gunicorn gevent worker, the default profile). The reply is
the reference agent's markdown document (heading, prose, bullets, a fenced code block) repeated
(@@filler=doc) to --tokens word-sized tokens. Each repetition runs three cases, interleaved:
- page: the page's stream GET /chat/<session>/stream?message_id=<reply> read to its last message;
- json: the JSON API stream instead (for comparison);
- none: no subscriber at all (the run still drives, stores and publishes).
Bytes: everything received on the page stream vs the reply's <article> in the session page a
reload renders (GET /chat/<session>) (target: ratio <= 3). CPU: user+system time of the gunicorn
worker (psutil) from the POST until the reply is final in the database (polled from the SQLite
file directly, which costs the server nothing), minus an idle baseline measured first; per
1,000 tokens. "page minus none" isolates the page stream's rendering. Prints figures only.
"""

from __future__ import annotations

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares")

from gevent import monkey  # noqa: E402

monkey.patch_all()

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cpu_seconds, db_rows, load_line, sse_messages, wait_final, worker_pids  # noqa: E402

from tests.servers import LiveStack  # noqa: E402

AGENT = "dir-code"
MODEL = "ref-fast"
SSE = {"Accept": "text/event-stream"}


def article(html: str, message_id: str) -> str:
    match = re.search(rf'<article id="msg-{re.escape(message_id)}".*?</article>', html, re.S)
    return match.group(0) if match else ""


def send(api, content):
    return api.post(
        "/api/chat/message", json={"agent_id": AGENT, "model_id": MODEL, "content": content}, timeout=10
    ).json()


def one_case(stack, api, pids, content, case, timeout):
    """Run one reply with `case` in (page, json, none); bytes, messages, cpu seconds, wall seconds."""
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    sent = send(api, content)
    received, messages, last = [0], 0, None
    deadline = time.monotonic() + timeout
    if case == "page":
        url = f"/chat/{sent['session_id']}/stream?message_id={sent['message_id']}"
        with api.get(url, headers=SSE, stream=True, timeout=(5, 30)) as response:
            for _now, message in sse_messages(response, deadline, received):
                messages += 1
                last = message
                if 'hx-swap-oob="delete"' in message.data:
                    break
    elif case == "json":
        with api.get(sent["stream_url"], headers=SSE, stream=True, timeout=(5, 30)) as response:
            for _now, message in sse_messages(response, deadline, received):
                messages += 1
                if message.event == "done":
                    break
    status = wait_final(stack.db_path, sent["message_id"], max(deadline - time.monotonic(), 1))
    cpu, wall = cpu_seconds(pids) - cpu0, time.monotonic() - t0
    return {
        "case": case,
        "sent": sent,
        "bytes": received[0],
        "messages": messages,
        "cpu": cpu,
        "wall": wall,
        "status": status,
        "last": last,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle baseline")
    args = parser.parse_args()
    print(load_line("start"))
    content = (
        f"Design the billing export @@tokens={args.tokens} @@delay_ms={args.delay_ms:g} @@first_token_ms=0 @@filler=doc"
    )
    timeout = 60 + args.tokens * args.delay_ms / 1000 * 4
    with tempfile.TemporaryDirectory() as workdir:
        env = {"LOG_LEVEL": "WARNING", "HEARTBEAT_SECONDS": "15"}
        with LiveStack(Path(workdir), workers=1, env_overrides=env) as stack:
            api = stack.login()
            pids = worker_pids(stack.servers[0])
            one_case(stack, api, pids, "warm-up @@tokens=200 @@delay_ms=0 @@first_token_ms=0", "page", 30)
            time.sleep(1.0)
            cpu0 = cpu_seconds(pids)
            time.sleep(args.idle)
            idle_rate = (cpu_seconds(pids) - cpu0) / args.idle
            results = []
            for _ in range(args.reps):
                for case in ("page", "json", "none"):
                    results.append(one_case(stack, api, pids, content, case, timeout))
                    time.sleep(0.5)  # let the store's last flush and housekeeping settle
            page_runs = [r for r in results if r["case"] == "page"]
            probe = page_runs[-1]
            page_html = api.get(f"/chat/{probe['sent']['session_id']}", timeout=10).text
            reload_article = article(page_html, probe["sent"]["message_id"])
            final_article = article(probe["last"].data if probe["last"] else "", probe["sent"]["message_id"])
            stored = db_rows(
                stack.db_path, "SELECT length(content) FROM messages WHERE id = ?", (probe["sent"]["message_id"],)
            )[0][0]
            timeouts = stack.server_log().count("WORKER TIMEOUT")

    print(
        f"\nReply: {args.tokens} tokens at {args.delay_ms:g} ms, markdown document repeated; "
        f"stored text {stored:,} chars; idle worker CPU {idle_rate * 1000:.1f} ms/s"
    )
    print("\nBytes (page stream, last repetition)")
    print(f"  page stream received        {probe['bytes']:>10,} B in {probe['messages']} messages")
    print(f"  final stream message        {len(probe['last'].data.encode()) if probe['last'] else 0:>10,} B")
    print(f"  its <article>               {len(final_article.encode()):>10,} B")
    print(f"  reload's <article>          {len(reload_article.encode()):>10,} B")
    ratio = probe["bytes"] / max(len(reload_article.encode()), 1)
    print(f"  ratio stream / reload article {ratio:8.2f}x   (target <= 3x)")
    ratios = [f"{r['bytes'] / max(len(reload_article.encode()), 1):.2f}x" for r in page_runs]
    print(f"  every page run: {', '.join(ratios)}")

    print("\nServer CPU (gunicorn worker), ms per 1,000 tokens, idle baseline subtracted")
    print(f"  {'case':34} {'median':>8} {'runs':>30} {'wall s':>8}  status")
    per_k = {}
    for case, label in (
        ("page", "page stream subscriber"),
        ("json", "JSON stream subscriber"),
        ("none", "no subscriber"),
    ):
        runs = [r for r in results if r["case"] == case]
        values = [(r["cpu"] - idle_rate * r["wall"]) * 1000 / (args.tokens / 1000) for r in runs]
        per_k[case] = statistics.median(values)
        print(
            f"  {label:34} {per_k[case]:8.1f} {str([round(v, 1) for v in values]):>30} "
            f"{statistics.median(r['wall'] for r in runs):8.2f}  {sorted({r['status'] for r in runs})}"
        )
    print(f"  {'page stream alone (page - none)':34} {per_k['page'] - per_k['none']:8.1f}")
    print(f"  {'JSON stream alone (json - none)':34} {per_k['json'] - per_k['none']:8.1f}")
    print(f"  gunicorn WORKER TIMEOUT lines: {timeouts}")
    print("\n" + load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
