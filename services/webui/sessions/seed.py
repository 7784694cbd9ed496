"""Realistic test data for `flask dev seed`: users, sessions, messages, usage and runs.

"Realistic" where it matters for the queries: sessions spread over users with a long tail (a few
heavy users), over a year, mostly active recently; titles from the first message; replies much
longer than questions, with a vocabulary whose word frequencies follow a Zipf curve (so search
terms range from everywhere to nearly nowhere), ticket numbers and error codes that occur in a
handful of messages, a share of archived sessions, and last replies that were cancelled, failed
or interrupted. Rows go in with executemany in large transactions; the search index is kept by
the same triggers as in production, and each batch's queued documents are indexed with it.
"""

from __future__ import annotations

import json
import random
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import insert, select

from ..auth import hash_password
from ..chat.service import make_title
from ..extensions import db
from ..models import ConversationSession, Message, Run, User, usage_columns, utcnow
from .search import index_queued

BATCH_SESSIONS = 2_000

COMMON = (
    "the a to of and in is it that for you this with on be are as can we not if your or have "
    "will at from by but so then when there what which should would could also just more now "
    "one all any new first next each only other some same after before because while into out "
    "up about over than use need want make check run see try keep add remove change move"
).split()
TECH = (
    "database migration schema index query table column transaction lock replica backup restore "
    "postgres sqlite redis cache queue worker job scheduler cron retry timeout latency throughput "
    "api endpoint request response header cookie session token oauth login password permission role "
    "deploy deployment kubernetes pod container docker image registry helm cluster node service ingress "
    "terraform module provider state bucket storage s3 cdn dns certificate tls proxy nginx gunicorn "
    "python flask django fastapi celery pandas numpy dataframe notebook pipeline etl warehouse dbt "
    "airflow spark kafka topic partition consumer producer offset stream event webhook payload json "
    "yaml config environment variable secret vault logging metrics tracing alert dashboard grafana "
    "prometheus incident outage postmortem rollback hotfix release branch merge rebase commit review "
    "test pytest fixture mock coverage flaky regression benchmark profile memory leak cpu thread "
    "async await coroutine future promise callback closure generator iterator decorator typing "
    "react component state props hook render css layout grid flexbox responsive accessibility "
    "invoice payment refund subscription billing customer churn revenue forecast budget quarter "
    "report summary analysis chart segment cohort funnel conversion campaign email newsletter "
    "contract clause policy compliance audit gdpr retention privacy consent vendor procurement "
    "roadmap milestone estimate sprint backlog ticket priority stakeholder onboarding documentation "
    "architecture diagram interface boundary dependency coupling refactor legacy monolith microservice "
    "encryption hash signature key rotation firewall vulnerability patch upgrade version changelog "
    "translation localization unicode encoding timezone calendar locale currency rounding decimal "
    "spreadsheet formula pivot export import csv upload download attachment archive search filter"
).split()
RARE = (
    "quokka zephyr obsidian marzipan kestrel halcyon juniper tamarind vellum saffron "
    "cobalt basalt meridian lanthanum fennel quillwort ptarmigan gossamer nectarine wolfram"
).split()
OPENERS = [
    "Can you help me {verb} the {a} {b}?",
    "How should we {verb} {a} for the {b}?",
    "Why does the {a} {verb} when the {b} changes?",
    "Please review this {a} and the {b} it uses.",
    "I need a plan to {verb} our {a} before the {b} release.",
    "What is the best way to {verb} a {a}?",
    "Summarize the {a} discussion and list open {b} questions.",
    "Draft a short note about the {a} {b}.",
]
VERBS = "fix migrate explain optimize design test deploy debug document refactor speed up secure".split()
AGENT_FALLBACK = [("architect", "Architect", "", ["ref-standard", "ref-fast"])]
ERRORS = {
    "error": "The agent could not be reached. Check that it is running and try again.",
    "interrupted": "The server restarted while this reply was being written; the text so far is kept.",
}


def _zipf_weights(n: int, s: float = 1.05) -> list[float]:
    total, weights = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank**s
        weights.append(total)
    return weights  # cumulative


class TextMaker:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.tech = list(TECH)
        rng.shuffle(self.tech)
        self.tech_cum = _zipf_weights(len(self.tech))
        # A pool of sentences keeps generation fast; per-message specifics keep the index varied.
        self.pool = [self._sentence() for _ in range(30_000)]

    def word(self) -> str:
        return self.rng.choices(self.tech, cum_weights=self.tech_cum)[0]

    def _sentence(self) -> str:
        rng = self.rng
        words = []
        for _ in range(rng.randint(8, 18)):
            words.append(self.word() if rng.random() < 0.4 else rng.choice(COMMON))
        sentence = " ".join(words)
        return sentence[0].upper() + sentence[1:] + rng.choice(".....?!:")

    def specifics(self, topic: list[str]) -> str:
        rng = self.rng
        parts = [f"the {rng.choice(topic)} {rng.choice(topic)} in {rng.choice(topic)}"]
        if rng.random() < 0.15:
            parts.append(f"ticket OPS-{rng.randint(1000, 99999)}")
        if rng.random() < 0.10:
            parts.append(f"error E{rng.randint(1000, 9999)}")
        if rng.random() < 0.02:
            parts.append(rng.choice(RARE))
        return "About " + ", ".join(parts) + "."

    def question(self, topic: list[str]) -> str:
        rng = self.rng
        opener = rng.choice(OPENERS).format(verb=rng.choice(VERBS), a=rng.choice(topic), b=rng.choice(topic))
        extra = " ".join(rng.choice(self.pool) for _ in range(rng.randint(0, 2)))
        return f"{opener} {self.specifics(topic)} {extra}".strip()

    def reply(self, topic: list[str]) -> str:
        rng = self.rng
        paragraphs = []
        for _ in range(rng.randint(2, 4)):
            paragraphs.append(" ".join(rng.choice(self.pool) for _ in range(rng.randint(2, 4))))
        paragraphs.insert(1, self.specifics(topic))
        if rng.random() < 0.35:
            paragraphs.append("\n".join(f"- {rng.choice(self.pool)}" for _ in range(rng.randint(2, 4))))
        if rng.random() < 0.2:
            name = rng.choice(topic).replace("-", "_")
            paragraphs.append(f"```python\ndef {name}(value):\n    return value  # {rng.choice(topic)}\n```")
        return "\n\n".join(paragraphs)


def _agents():
    try:
        from ..fleet import registry

        agents = [
            (a.agent_id, a.name, a.parent_role, [m.model_id for m in a.models], {m.model_id: m for m in a.models})
            for a in registry().agents
        ]
    except Exception:
        agents = []
    return agents or [(a, n, p, ms, {}) for a, n, p, ms in AGENT_FALLBACK]


def _seed_users(n_users: int) -> list[User]:
    users = []
    for index in range(1, n_users + 1):
        name = f"seed-user-{index:02d}"
        user = db.session.scalar(select(User).where(User.username == name))
        if user is None:
            user = User(username=name, password_hash=hash_password(secrets.token_urlsafe(16)), role="user")
            db.session.add(user)
        users.append(user)
    db.session.commit()
    return users


def seed(
    n_sessions: int, per_session: int, *, n_users: int = 20, users=None, random_seed: int = 42, progress=None
) -> dict:
    rng = random.Random(random_seed)
    users = users or _seed_users(n_users)
    user_ids = [user.id for user in users]
    user_cum = _zipf_weights(len(user_ids), 0.8)
    agents = _agents()
    text = TextMaker(rng)
    now = utcnow()
    sessions_table, messages_table, runs_table = (
        ConversationSession.__table__,
        Message.__table__,
        Run.__table__,
    )
    done = messages_done = 0
    while done < n_sessions:
        batch = min(BATCH_SESSIONS, n_sessions - done)
        sessions, messages, runs = [], [], []
        for _ in range(batch):
            agent_id, agent_name, parent_role, models, prices = rng.choice(agents)
            model_id = rng.choice(models)
            price = prices.get(model_id)
            topic = [text.word() for _ in range(6)]
            # Recent sessions are more common than old ones.
            age = timedelta(days=365 * rng.random() ** 2.2, seconds=rng.randint(0, 86_399))
            at = now - age
            session_id = str(uuid.uuid4())
            created = at
            history_chars = 0
            title = None
            first_message, first_run = len(messages), len(runs)
            for index in range(per_session):
                message_id = str(uuid.uuid4())
                if index % 2 == 0:
                    content = text.question(topic)
                    title = title or make_title(content)
                    messages.append(
                        {
                            "id": message_id,
                            "session_id": session_id,
                            "role": "user",
                            "message_type": "chat",
                            "agent_id": agent_id,
                            "content": content,
                            "status": "complete",
                            "usage": None,
                            "error": None,
                            "created_at": at,
                            "completed_at": at,
                            "model_id": None,
                            **usage_columns(None),
                        }
                    )
                    history_chars += len(content)
                    at += timedelta(microseconds=rng.randint(1, 999))
                    continue
                content = text.reply(topic)
                last = index >= per_session - 2
                status = "complete"
                if last:
                    status = rng.choices(["complete", "cancelled", "error", "interrupted"], [88, 5, 4, 3])[0]
                if status == "cancelled":
                    content = content[: rng.randint(20, max(21, len(content) // 2))]
                elif status == "error":
                    content = ""
                elif status == "interrupted":
                    content = content[: rng.randint(20, max(21, len(content) // 2))]
                took = timedelta(seconds=rng.uniform(1.5, 45))
                prompt_tokens = history_chars // 4 + 40
                completion_tokens = len(content) // 4
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
                if price is not None:
                    usage["cost_usd"] = price.cost_usd(prompt_tokens, completion_tokens)
                messages.append(
                    {
                        "id": message_id,
                        "session_id": session_id,
                        "role": "assistant",
                        "message_type": "chat",
                        "agent_id": agent_id,
                        "content": content,
                        "status": status,
                        "usage": json.dumps(usage, sort_keys=True),
                        "error": ERRORS.get(status),
                        "created_at": at,
                        "completed_at": at + took,
                        "model_id": model_id,
                        **usage_columns(usage),
                    }
                )
                runs.append(
                    {
                        "message_id": message_id,
                        "session_id": session_id,
                        "agent_id": agent_id,
                        "model_id": model_id,
                        "owner": "seed",
                        "beat_at": at + took,
                        "cancel_requested_at": at + took / 2 if status == "cancelled" else None,
                        "last_seq": completion_tokens // 3 + 2,
                        "created_at": at,
                        "ended_at": at + took,
                    }
                )
                history_chars += len(content)
                at += took + timedelta(seconds=rng.uniform(20, 1800))
            # A session that would end in the future is moved back so that it ends by now.
            shift = max(timedelta(0), at - now)
            if shift:
                created -= shift
                for row in messages[first_message:]:
                    row["created_at"] -= shift
                    row["completed_at"] -= shift
                for row in runs[first_run:]:
                    for key in ("beat_at", "created_at", "ended_at", "cancel_requested_at"):
                        if row[key] is not None:
                            row[key] -= shift
                at -= shift
            updated = messages[-1]["completed_at"] if per_session else at
            archived_at = None
            if now - updated > timedelta(days=30) and rng.random() < 0.6:
                archived_at = min(now, updated + timedelta(days=rng.uniform(1, 30)))
            sessions.append(
                {
                    "id": session_id,
                    "user_id": rng.choices(user_ids, cum_weights=user_cum)[0],
                    "agent_id": agent_id,
                    "agent_name": agent_name,
                    "parent_role": parent_role,
                    "model_id": model_id,
                    "title": title or "New chat",
                    "created_at": created,
                    "updated_at": updated,
                    "archived_at": archived_at,
                    "active_run_id": None,
                }
            )
        with db.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # Random uuid keys touch pages all over the indexes: a large cache keeps them in memory.
                conn.exec_driver_sql("PRAGMA cache_size = -262144")
            conn.execute(insert(sessions_table), sessions)
            conn.execute(insert(messages_table), messages)
            if runs:
                conn.execute(insert(runs_table), runs)
            index_queued(conn)  # the batch's titles and messages, as the housekeeping would
        done += batch
        messages_done += len(messages)
        if progress:
            progress(done, messages_done)
    return {"sessions": done, "messages": messages_done, "users": len(user_ids)}
