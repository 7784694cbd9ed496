"""Usage totals: what replies cost, by day, agent, model and user, over a range of UTC days.

One GROUP BY over the numeric usage columns of `messages` (filled by whoever stores a reply's
usage, see models.usage_columns), read from the covering index `ix_messages_usage` through the
owner's sessions: no JSON is parsed, and the rows that come back are one per (day, user, agent,
model), however many replies there were. It runs off the serving thread (UsageReader). Python
then rolls those rows up into the page's tables.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from ..errors import RequestError, parse_datetime
from ..extensions import db
from ..models import ConversationSession, Message, User, utcnow
from . import usage_reader

DEFAULT_DAYS = 30
MAX_DAYS = 731  # two years: the scan stays bounded however the range is written


class UsageError(RequestError):
    """A usage request refused, with the HTTP status and a sentence for a person."""


@dataclass(frozen=True)
class UsageFilters:
    first_day: date  # inclusive, UTC
    last_day: date  # inclusive, UTC
    user_id: int | None  # whose replies; None: everyone's (admins only)
    user: str  # "all" or a username, as the form and the links carry it

    @property
    def everyone(self) -> bool:
        return self.user_id is None

    def query_args(self) -> dict:
        return {"from": self.first_day.isoformat(), "to": self.last_day.isoformat(), "user": self.user}


def _day(args, name: str, default: date) -> date:
    raw = (args.get(name) or "").strip()
    if not raw:
        return default
    value = parse_datetime(raw, name, invalid=f"{name} must be a date like 2026-01-31, not {raw[:40]!r}.")
    if len(raw) != 10:
        raise UsageError(400, f"{name} must be a day like 2026-01-31 (UTC), without a time, not {raw[:40]!r}.")
    return value.date()


def parse_filters(args, user) -> UsageFilters:
    """The page's, the CSV's and the API's parameters: from, to (UTC days, inclusive), user."""
    today = utcnow().date()
    last_day = _day(args, "to", today)
    first_day = _day(args, "from", last_day - timedelta(days=DEFAULT_DAYS - 1))
    if first_day > last_day:
        raise UsageError(400, "from must be on or before to.")
    if (last_day - first_day).days + 1 > MAX_DAYS:
        raise UsageError(400, f"The range covers {(last_day - first_day).days + 1:,} days; at most {MAX_DAYS} fit.")
    wanted = (args.get("user") or "").strip()
    if not user.is_admin:
        if wanted not in ("", user.username):
            raise UsageError(403, "Only an admin can see other users' usage.")
        return UsageFilters(first_day, last_day, user.id, user.username)
    if wanted in ("", "all"):
        return UsageFilters(first_day, last_day, None, "all")
    user_id = db.session.scalar(select(User.id).where(User.username == wanted))
    if user_id is None:
        raise UsageError(400, f"There is no user {wanted[:64]!r}.")
    return UsageFilters(first_day, last_day, user_id, wanted)


# ---- the totals ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Replies and what they cost; `key` names the row (a day, an agent, a model, a user)."""

    key: str = ""
    replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: "Tally") -> None:
        self.replies += other.replies
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd


@dataclass(frozen=True)
class UsageRow:
    """One (day, user, agent, model) group: the CSV's rows, and what the tables add up."""

    day: str
    username: str
    agent_id: str
    model_id: str
    tally: Tally


@dataclass
class Usage:
    filters: UsageFilters
    rows: list[UsageRow]
    total: Tally = field(default_factory=Tally)
    by_day: list[Tally] = field(default_factory=list)
    by_agent: list[Tally] = field(default_factory=list)
    by_model: list[Tally] = field(default_factory=list)
    by_user: list[Tally] = field(default_factory=list)


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def usage_rows(filters: UsageFilters) -> list[UsageRow]:
    day = func.date(Message.created_at)  # 'YYYY-MM-DD' on SQLite, a date on PostgreSQL
    query = (
        select(
            day,
            User.username,
            Message.agent_id,
            Message.model_id,
            func.count(),
            func.coalesce(func.sum(Message.prompt_tokens), 0),
            func.coalesce(func.sum(Message.completion_tokens), 0),
            func.coalesce(func.sum(Message.cost_usd), 0.0),
        )
        .select_from(Message)
        .join(ConversationSession, ConversationSession.id == Message.session_id)
        .join(User, User.id == ConversationSession.user_id)
        .where(
            Message.role == "assistant",
            Message.created_at >= _start(filters.first_day),
            Message.created_at < _start(filters.last_day) + timedelta(days=1),
        )
        .group_by(day, User.username, Message.agent_id, Message.model_id)
    )
    if filters.user_id is not None:
        query = query.where(ConversationSession.user_id == filters.user_id)
    rows = [
        UsageRow(
            str(when)[:10],
            username,
            agent_id or "",
            model_id or "",
            Tally(replies=int(replies), prompt_tokens=int(p), completion_tokens=int(c), cost_usd=float(cost)),
        )
        for when, username, agent_id, model_id, replies, p, c, cost in usage_reader().rows(query)
    ]
    rows.sort(key=lambda r: (r.day, r.username, r.agent_id, r.model_id))
    return rows


def _rollup(rows: list[UsageRow], key) -> list[Tally]:
    tallies: dict[str, Tally] = defaultdict(Tally)
    for row in rows:
        name = key(row)
        tallies[name].key = name
        tallies[name].add(row.tally)
    return list(tallies.values())


def _by_cost(tallies: list[Tally]) -> list[Tally]:
    return sorted(tallies, key=lambda t: (-t.cost_usd, -t.replies, t.key))


def build_usage(filters: UsageFilters) -> Usage:
    rows = usage_rows(filters)
    usage = Usage(filters, rows)
    for row in rows:
        usage.total.add(row.tally)
    usage.by_day = sorted(_rollup(rows, lambda r: r.day), key=lambda t: t.key, reverse=True)  # newest first
    usage.by_agent = _by_cost(_rollup(rows, lambda r: r.agent_id))
    usage.by_model = _by_cost(_rollup(rows, lambda r: r.model_id))
    usage.by_user = _by_cost(_rollup(rows, lambda r: r.username)) if filters.everyone else []
    return usage
