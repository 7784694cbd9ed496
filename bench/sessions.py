"""Sessions benchmark: p50/p95 of the sidebar query, the sessions page, searches, a review and usage at
100,000 sessions and 1,000,000 messages (targets: page ≤ 50 ms, search ≤ 100 ms, at p95).

    .venv/bin/python bench/sessions.py [--db PATH] [--sessions 100000] [--messages-per-session 10]
                                       [--samples 40]

Uses (and keeps) the SQLite file PATH (default: /tmp/switchboard-sessions-bench.db): migrates it,
and seeds it with `flask dev seed`'s generator when it holds fewer sessions than asked for (about
3-4 minutes for 1M messages), so a second run starts measuring at once. Requests go through the
Flask test client, so every figure includes routing, login, the queries and the template; the
user is the heaviest seed user (the one with the most sessions), the admin lines list everyone's.
Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from services.webui import create_app  # noqa: E402
from services.webui.extensions import db  # noqa: E402
from services.webui.models import ConversationSession, Message, User, utcnow  # noqa: E402
from services.webui.sessions.queries import SORTS, Cursor, encode_cursor, sidebar_sessions  # noqa: E402
from services.webui.sessions.seed import seed  # noqa: E402
from tests.support import free_port, write_registry  # noqa: E402

HX = {"HX-Request": "true", "HX-Target": "div#sessions-results"}
# What people type: common words, a two-word query, prefixes as typed, rare words, no match.
SEARCHES = [
    "database",
    "deployment rollback",
    "dat",
    "data",
    "deploy",
    "kubern",
    "error",
    "the",
    "ptarmigan",
    "quokka zephyr",
    "ops 4821",
    "rollback deploym",
]
AGENTS = [
    {"agent_id": "architect", "port": 1, "models": [("ref-standard", 32768), ("ref-fast", 8192)]},
    {"agent_id": "dir-code", "port": 2, "parent_role": "architect", "models": [("ref-standard", 32768)]},
    {"agent_id": "dir-data", "port": 3, "parent_role": "architect", "models": [("ref-fast", 8192)]},
    {"agent_id": "dir-ops", "port": 4, "parent_role": "architect", "models": [("ref-large", 131072)]},
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Report:
    def __init__(self):
        self.rows: list[tuple[str, list[float], str]] = []

    def measure(self, label: str, call, samples: int, target: str = "") -> list[float]:
        for _ in range(3):  # warm the caches and the compiled-statement cache
            call(0)
        times = []
        for index in range(samples):
            started = time.perf_counter()
            call(index)
            times.append((time.perf_counter() - started) * 1000)
        self.rows.append((label, times, target))
        return times

    def print(self) -> None:
        print(f"{'':48} {'p50':>8} {'p95':>8} {'max':>8}   target (p95)")
        for label, times, target in self.rows:
            p50, p95 = statistics.median(times), percentile(times, 95)
            verdict = ""
            if target:
                verdict = f"≤ {target} ms  " + ("ok" if p95 <= float(target) else "MISSED")
            print(f"{label:48} {p50:7.1f}  {p95:7.1f}  {max(times):7.1f}   {verdict}")


def logged_in(app, user_id: int):
    """A test client with a real login (a login_sessions row and its token in the cookie)."""
    from flask import session as flask_session

    from services.webui.auth import start_login

    client = app.test_client()
    with app.test_request_context():
        start_login(db.session.get(User, user_id))
        values = dict(flask_session)
    with client.session_transaction() as session:
        session.update(values)
    return client


def get(client, url: str, headers=None) -> None:
    response = client.get(url, headers=headers or {})
    if response.status_code != 200:
        raise SystemExit(f"GET {url} -> {response.status_code}: {response.text[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="/tmp/switchboard-sessions-bench.db")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--messages-per-session", type=int, default=10)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sessions-bench-"))
    registry = write_registry(workdir / "agents.toml", [{**a, "port": free_port()} for a in AGENTS])
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(args.db).resolve()}",
            "AGENTS_FILE": str(registry),
            "SECRET_KEY": "bench-secret-key-0123456789",
            "LOG_LEVEL": "WARNING",
        }
    )
    with app.app_context():
        upgrade()
        have = db.session.scalar(select(func.count()).select_from(ConversationSession))
        if have < args.sessions:
            print(
                f"Seeding {args.sessions - have:,} sessions x {args.messages_per_session} messages "
                f"(as `flask dev seed --sessions {args.sessions - have} "
                f"--messages-per-session {args.messages_per_session}`) ...",
                flush=True,
            )
            started = time.monotonic()
            seed(args.sessions - have, args.messages_per_session, random_seed=have + 1)
            print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)
        sessions = db.session.scalar(select(func.count()).select_from(ConversationSession))
        messages = db.session.scalar(select(func.count()).select_from(Message))
        user_id, user_sessions = db.session.execute(
            select(ConversationSession.user_id, func.count())
            .group_by(ConversationSession.user_id)
            .order_by(func.count().desc())
            .limit(1)
        ).one()
        user = db.session.get(User, user_id)
        admin = db.session.scalar(select(User).where(User.role == "admin").limit(1))
        if admin is None:
            from services.webui.auth import create_user

            admin = create_user("bench-admin", "bench-admin-password", "admin")
        admin_id = admin.id
        review_ids = db.session.scalars(
            select(ConversationSession.id)
            .where(ConversationSession.user_id == user_id)
            .order_by(func.random())
            .limit(200)
        ).all()
        deep = db.session.execute(
            select(SORTS["updated"], ConversationSession.id)
            .where(ConversationSession.user_id == user_id)
            .order_by(SORTS["updated"].desc(), ConversationSession.id.desc())
            .offset(user_sessions // 2)
            .limit(1)
        ).one()
        with app.test_request_context():
            deep_cursor = encode_cursor(Cursor("updated", deep[0], deep[1]))
        print(
            f"Database {args.db}: {sessions:,} sessions, {messages:,} messages; "
            f"benchmark user {user.username} owns {user_sessions:,} sessions.\n"
        )

    client, admin_client = logged_in(app, user_id), logged_in(app, admin_id)
    report, samples = Report(), args.samples
    with app.app_context():
        report.measure("sidebar query (50 latest active sessions)", lambda i: sidebar_sessions(user_id), samples)
    report.measure("sessions page, first page (HTML)", lambda i: get(client, "/sessions"), samples, "50")
    report.measure(
        f"sessions page, deep page (session {user_sessions // 2:,})",
        lambda i: get(client, f"/sessions?cursor={deep_cursor}"),
        samples,
        "50",
    )
    report.measure(
        "sessions page, filtered (cancelled, archived)",
        lambda i: get(client, "/sessions?status=cancelled&archived=true"),
        samples,
        "50",
    )
    report.measure(
        "sessions page, filtered (agent, model, dates)",
        lambda i: get(client, "/sessions?agent_id=dir-code&model_id=ref-standard&from=2026-01-01"),
        samples,
        "50",
    )
    report.measure("API list GET /api/chat/sessions", lambda i: get(client, "/api/chat/sessions"), samples, "50")
    every_search = []
    for query in SEARCHES:
        every_search += report.measure(
            f"search {query!r} (as you type, HX)",
            lambda i, q=query: get(client, f"/sessions?q={q}", HX),
            samples,
            "100",
        )
    report.rows.append(("search, all of the above together", every_search, "100"))
    report.measure(
        "search 'deploy' + status interrupted",
        lambda i: get(client, "/sessions?q=deploy&status=interrupted", HX),
        samples,
        "100",
    )
    report.measure(
        "review page (random sessions of the user)",
        lambda i: get(client, f"/sessions/{review_ids[i % len(review_ids)]}"),
        samples,
        "50",
    )
    report.measure(
        "review JSON GET /api/chat/sessions/<id>",
        lambda i: get(client, f"/api/chat/sessions/{review_ids[i % len(review_ids)]}"),
        samples,
        "50",
    )
    report.measure("admin: everyone's sessions page", lambda i: get(admin_client, "/sessions?user=all"), samples, "50")
    report.measure(
        "admin: search everyone's 'kubern'",
        lambda i: get(admin_client, "/sessions?user=all&q=kubern", HX),
        samples,
        "100",
    )
    report.measure(
        "admin: search everyone's 'ptarmigan'",
        lambda i: get(admin_client, "/sessions?user=all&q=ptarmigan", HX),
        samples,
        "100",
    )
    # Usage totals run off the serving thread (UsageReader): these time the whole request.
    report.measure("usage page, last 30 days (the user)", lambda i: get(client, "/usage"), samples)
    year = f"/usage?from={(utcnow() - timedelta(days=364)).date()}&to={utcnow().date()}"
    report.measure("usage page, a year (the user)", lambda i: get(client, year), samples)
    report.measure("admin: everyone's usage, a year", lambda i: get(admin_client, year + "&user=all"), samples)
    report.measure(
        "chat page with its running total",
        lambda i: get(client, f"/chat/{review_ids[i % len(review_ids)]}"),
        samples,
        "50",
    )
    report.print()
    with app.app_context():
        db.engine.dispose()
    return 0


if __name__ == "__main__":
    random.seed(1)
    sys.exit(main())
