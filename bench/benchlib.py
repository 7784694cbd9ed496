"""Helpers shared by the benches of this folder (not a bench itself).

Import it after gevent's monkey-patching, as every bench here patches first: the HTTP clients
below must be cooperative so one process can hold hundreds of streams.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.gateway.sse import SSEParser  # noqa: E402


def percentile(values, q):
    """Nearest-rank percentile; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def p50_p95_max(values) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(values), percentile(values, 95), max(values)


def load_line(label: str) -> str:
    """The machine's load, printed at the start and end of each bench: figures from a shared
    2-core VM mean little without it."""
    one, five, fifteen = os.getloadavg()
    return (
        f"[{label}] {time.strftime('%H:%M:%S', time.gmtime())} UTC  loadavg {one:.2f} {five:.2f} "
        f"{fifteen:.2f}  cpus {os.cpu_count()}  cpu busy {psutil.cpu_percent(interval=0.5):.0f} %"
    )


# The bench's client stands in for browsers on other machines; here it shares the 2 cores with
# the server and the agents it measures. At equal priority, in about half the runs of
# relay.py, the first token reached the client's socket and then waited ~1.7 ms for the
# client to get a core back (the worker and the agent still busy with the rest of the reply):
# server-side marks put the token at the socket 0.2 ms before the client read it in fast runs
# and 1.9 ms before in slow ones, and a favoured client made every run fast. That wait is the
# shared machine's, not the server's.
CLIENT_NICE = -10


def favour_client(niceness: int = CLIENT_NICE) -> str:
    """Give this process (the bench's client) `niceness`, after the servers it measures have
    started (they keep theirs). Returns a line for the bench's header."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError:  # lowering niceness below 0 needs root (or CAP_SYS_NICE)
        return f"bench client at niceness {os.getpriority(os.PRIO_PROCESS, 0)} (could not set {niceness})"
    return f"bench client at niceness {niceness}, servers and agents at their own"


def raise_fd_limit(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def worker_pids(server) -> list[int]:
    """The gunicorn worker processes of one server (a Popen of the master)."""
    return [child.pid for child in psutil.Process(server.pid).children()]


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_bytes(pids) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def db_rows(db_path: Path, sql: str, params=()) -> list[tuple]:
    """Read the stack's SQLite file directly (read-only): no server CPU is spent on it."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def wait_final(db_path: Path, message_id: str, timeout: float) -> str | None:
    """Poll the database until the reply has a final status; the status, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = db_rows(db_path, "SELECT status FROM messages WHERE id = ?", (message_id,))
        if rows and rows[0][0] in ("complete", "cancelled", "error", "interrupted"):
            return rows[0][0]
        time.sleep(0.05)
    return None


def sse_messages(response, deadline: float, received: list | None = None):
    """(receive time, SSEMessage) as they arrive; stops at the deadline (checked whenever a
    chunk arrives) or when the body ends. `received[0]` counts the body's bytes."""
    parser = SSEParser()
    for chunk in response.iter_content(chunk_size=None):
        now = time.perf_counter()
        if received is not None:
            received[0] += len(chunk)
        for message in parser.feed(chunk):
            yield now, message
        if time.monotonic() >= deadline:
            return
