"""Listing sessions: filters, the opaque keyset cursor, the list and sidebar queries.

Keyset pagination, never OFFSET: a page is "the N rows after (sort value, id)" in index order, so
page 4,000 costs what page 1 costs. The cursor carries that key, signed so that a tampered or
truncated cursor is a 400 rather than a strange page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, select, tuple_

from ..errors import LATEST, RequestError, parse_datetime, parse_int
from ..extensions import db
from ..models import MESSAGE_STATUSES, ConversationSession, Message, User
from . import search

S = ConversationSession
SORTS = {"updated": S.updated_at, "created": S.created_at}
ARCHIVED_VALUES = {
    "": "all",
    "all": "all",
    "any": "all",
    "false": "active",
    "0": "active",
    "no": "active",
    "active": "active",
    "true": "archived",
    "1": "archived",
    "yes": "archived",
    "archived": "archived",
}
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_QUERY_CHARS = 200
SIDEBAR_LIMIT = 50
_ID_ALPHABET = re.compile(r"^[A-Za-z0-9_.:-]+$")


class SessionsError(RequestError):
    """A request the sessions area refuses, with the HTTP status and a sentence for a person."""


def bad_request(message: str) -> SessionsError:
    return SessionsError(400, message)


# ---- the cursor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    sort: str
    value: datetime
    session_id: str
    backwards: bool = False  # True: the page before this key (the page's "Newer" link)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="switchboard.sessions.cursor")


def encode_cursor(cursor: Cursor) -> str:
    return _serializer().dumps([cursor.sort, cursor.value.isoformat(), cursor.session_id, 1 if cursor.backwards else 0])


def decode_cursor(raw: str, sort: str) -> Cursor:
    invalid = "The cursor is not valid. Start again from the first page."
    if len(raw) > 300:
        raise bad_request(invalid)
    try:
        sort_key, value, session_id, backwards = _serializer().loads(raw)
        parsed = Cursor(sort_key, datetime.fromisoformat(value), str(session_id), bool(backwards))
    except (BadSignature, ValueError, TypeError):
        raise bad_request(invalid) from None
    if parsed.sort != sort:
        raise bad_request("The cursor belongs to a different sort order. Start again from the first page.")
    return parsed


# ---- filters ------------------------------------------------------------------------------------


@dataclass
class ListFilters:
    q: str = ""
    agent_id: str | None = None
    model_id: str | None = None
    status: str | None = None
    archived: str = "all"  # all | active | archived
    date_from: datetime | None = None  # inclusive, on the sort column
    date_to: datetime | None = None  # exclusive, on the sort column
    sort: str = "updated"
    owner: str = "me"  # me | all | a username (the last two for admins only)
    owner_id: int | None = None  # whose sessions are listed; None = everyone's
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None
    raw: dict = field(default_factory=dict)  # the accepted parameters, for links and the form

    @property
    def terms(self) -> list[str]:
        return search.terms(self.q)

    def query_args(self, **changes) -> dict:
        """The filters as URL parameters (without the cursor unless given), for links."""
        args = {k: v for k, v in self.raw.items() if v not in (None, "") and k != "cursor"}
        args.update({k: v for k, v in changes.items() if v is not None})
        return args


def _short_text(args, name: str, limit: int) -> str | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if len(value) > limit or not _ID_ALPHABET.match(value):
        raise bad_request(f"{name} {value[:40]!r} is not a valid identifier.")
    return value


def _parse_date(args, name: str, end: bool) -> datetime | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    value = parse_datetime(raw, name, invalid=f"{name} must be a date like 2026-01-31, not {raw[:40]!r}.")
    if end and len(raw) == 10:  # a day given as `to` includes the whole day
        # The last day of the calendar has no next day: it ends at the last representable moment.
        value = value + timedelta(days=1) if value.date() < LATEST.date() else LATEST
    return value


def parse_filters(args, user) -> ListFilters:
    """Validate list parameters (query string of the API and the page); bad ones are a 400."""
    q = (args.get("q") or "").strip()
    if len(q) > MAX_QUERY_CHARS:
        raise bad_request(f"The search text is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}.")
    status = (args.get("status") or "").strip() or None
    if status is not None and status not in MESSAGE_STATUSES:
        raise bad_request(f"status must be one of {', '.join(MESSAGE_STATUSES)}, not {status[:40]!r}.")
    archived_raw = (args.get("archived") or "").strip().lower()
    if archived_raw not in ARCHIVED_VALUES:
        raise bad_request(f"archived must be true, false or all, not {archived_raw[:40]!r}.")
    sort = (args.get("sort") or "updated").strip().lower()
    if sort not in SORTS:
        raise bad_request(f"sort must be updated or created, not {sort[:40]!r}.")
    limit_raw = (args.get("limit") or "").strip()
    if limit_raw:
        limit = parse_int(limit_raw, "limit", 1, MAX_LIMIT)
    else:
        limit = DEFAULT_LIMIT
    date_from = _parse_date(args, "from", end=False)
    date_to = _parse_date(args, "to", end=True)
    if date_from and date_to and date_from >= date_to:
        raise bad_request("from must be before to.")
    owner = (args.get("user") or "").strip() or "me"
    if owner not in ("me", user.username) and not user.is_admin:
        raise SessionsError(403, "Only an admin can list other users' sessions.")
    if owner == user.username:
        owner = "me"
    owner_id = None if owner == "all" else user.id
    if owner not in ("me", "all"):
        owner_id = db.session.scalar(select(User.id).where(User.username == owner))
        if owner_id is None:
            raise bad_request(f"There is no user {owner[:64]!r}.")
    filters = ListFilters(
        q=q,
        agent_id=_short_text(args, "agent_id", 64),
        model_id=_short_text(args, "model_id", 128),
        status=status,
        archived=ARCHIVED_VALUES[archived_raw],
        date_from=date_from,
        date_to=date_to,
        sort=sort,
        owner=owner,
        owner_id=owner_id,
        limit=limit,
    )
    cursor_raw = (args.get("cursor") or "").strip()
    if cursor_raw:
        filters.cursor = decode_cursor(cursor_raw, sort)
    filters.raw = {
        "q": q,
        "agent_id": filters.agent_id,
        "model_id": filters.model_id,
        "status": status,
        "archived": "" if filters.archived == "all" else filters.archived,
        "from": (args.get("from") or "").strip(),
        "to": (args.get("to") or "").strip(),
        "sort": "" if sort == "updated" else sort,
        "user": "" if owner == "me" else owner,
        "limit": limit_raw,
    }
    return filters


# ---- the list -----------------------------------------------------------------------------------


@dataclass
class SessionRow:
    session: ConversationSession
    owner: str
    last_status: str | None
    message_count: int
    title_html: object = None  # Markup with <mark> when the title matched a search
    snippet_html: object = None  # Markup: a highlighted excerpt of a matching message


@dataclass
class SessionPage:
    rows: list[SessionRow]
    next_cursor: str | None
    prev_cursor: str | None
    filters: ListFilters


def last_reply_status():
    """The status of the session's latest reply: how its last run ended (or that it is live)."""
    return (
        select(Message.status)
        .where(Message.session_id == S.id, Message.role == "assistant")
        .order_by(Message.created_at.desc())
        .limit(1)
        .correlate(S)
        .scalar_subquery()
    )


def message_count():
    return select(func.count()).where(Message.session_id == S.id).correlate(S).scalar_subquery()


def list_sessions(filters: ListFilters, user) -> SessionPage:
    sort_col = SORTS[filters.sort]
    status_col = last_reply_status()
    # Conditions the sort index serves (owner, dates, cursor) bound a walk; the others filter it.
    conditions = []
    if filters.owner_id is not None:
        conditions.append(S.user_id == filters.owner_id)
    if filters.date_from:
        conditions.append(sort_col >= filters.date_from)
    if filters.date_to:
        conditions.append(sort_col < filters.date_to)
    key = tuple_(sort_col, S.id)
    backwards = bool(filters.cursor and filters.cursor.backwards)
    if filters.cursor:
        bound = tuple_(filters.cursor.value, filters.cursor.session_id)
        conditions.append(key > bound if backwards else key < bound)
    order = (sort_col.asc(), S.id.asc()) if backwards else (sort_col.desc(), S.id.desc())
    walk = list(conditions)
    if filters.agent_id:
        conditions.append(S.agent_id == filters.agent_id)
    if filters.model_id:
        conditions.append(S.model_id == filters.model_id)
    if filters.archived == "active":
        conditions.append(S.archived_at.is_(None))
    elif filters.archived == "archived":
        conditions.append(S.archived_at.is_not(None))
    if filters.status:
        conditions.append(status_col == filters.status)

    backend = expression = None
    walk_end = None  # the last session a capped search walk looked at
    stmt = select(S, User.username, status_col, message_count()).join(User, User.id == S.user_id)
    if filters.terms:
        backend = search.backend()
        backend.catch_up()
        expression = backend.expression(filters.terms)
        common = backend.is_common(expression, filters.owner_id)
        if common and not backwards:
            # At most PROBE_BUDGET sessions are looked at, whatever the other filters let through.
            walk_end = db.session.execute(
                select(sort_col, S.id).where(*walk).order_by(*order).offset(search.PROBE_BUDGET - 1).limit(1)
            ).first()
            if walk_end is not None:
                conditions.append(key >= tuple_(walk_end[0], walk_end[1]))
        stmt = backend.restrict(stmt, expression, filters.owner_id, common, S.id)
    rows = db.session.execute(stmt.where(*conditions).order_by(*order).limit(filters.limit + 1)).all()
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    if backwards:
        rows.reverse()
    page_rows = [SessionRow(session=row[0], owner=row[1], last_status=row[2], message_count=row[3]) for row in rows]
    if backend is not None and page_rows:
        backend.decorate(expression, page_rows, {row[0].id: row[4] for row in rows})

    def cursor_at(value, session_id: str, backwards_: bool) -> str:
        return encode_cursor(Cursor(filters.sort, value, session_id, backwards_))

    def key_of(row: SessionRow):
        return (row.session.updated_at if filters.sort == "updated" else row.session.created_at), row.session.id

    next_cursor = prev_cursor = None
    if backwards:
        if page_rows:
            next_cursor = cursor_at(*key_of(page_rows[-1]), False)
            if more:
                prev_cursor = cursor_at(*key_of(page_rows[0]), True)
    else:
        if more:
            next_cursor = cursor_at(*key_of(page_rows[-1]), False)
        elif walk_end is not None:
            # The walk stopped at its budget: the next page goes on from where it stopped.
            next_cursor = cursor_at(walk_end[0], walk_end[1], False)
        if filters.cursor is not None:
            first = key_of(page_rows[0]) if page_rows else (filters.cursor.value, filters.cursor.session_id)
            prev_cursor = cursor_at(*first, True)
    return SessionPage(rows=page_rows, next_cursor=next_cursor, prev_cursor=prev_cursor, filters=filters)


def sidebar_sessions(user_id: int, limit: int = SIDEBAR_LIMIT) -> list[ConversationSession]:
    """The user's active sessions, latest activity first (archived ones leave the sidebar)."""
    return list(
        db.session.scalars(
            select(S)
            .where(S.user_id == user_id, S.archived_at.is_(None))
            .order_by(S.updated_at.desc(), S.id.desc())
            .limit(limit)
        )
    )


def filter_choices(user) -> dict:
    """Agents, models and statuses for the filter form (agents and models from the registry)."""
    from ..fleet import registry

    agents = {agent.agent_id: agent.name for agent in registry().agents}
    models = {model.model_id for agent in registry().agents for model in agent.models}
    return {
        "agents": sorted(agents.items()),
        "models": sorted(models),
        "statuses": MESSAGE_STATUSES,
        "users": sorted(db.session.scalars(select(User.username))) if user.is_admin else [],
    }
