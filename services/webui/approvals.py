"""Approvals: what an agent asks a person before it goes on, and the one answer it gets.

The concept's one home: checking an agent's request, storing it (by the run's driver, before
any client sees it), reading requests and decisions for the pages, and their form in exports
and imports. Answering one (ownership, the conditional UPDATE, forwarding) is chat/approvals.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup
from sqlalchemy import insert, select

from .extensions import db
from .models import Approval, utcnow

DECISIONS = ("approve", "reject")
DECISION_LABELS = {"approve": "Approved", "reject": "Rejected"}
ID_CHARS = 128
TITLE_CHARS = 300
DETAIL_CHARS = 20_000
COMMENT_CHARS = 2_000
DECIDER_CHARS = 64
# Ids go into URLs and element ids: a conservative alphabet.
_APPROVAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

approvals_table = Approval.__table__


def valid_id(value) -> bool:
    return isinstance(value, str) and bool(_APPROVAL_ID.match(value))


def clean_request(value) -> dict | None:
    """An agent's `approval` object as {approval_id, title, detail}, or None if it is unusable."""
    if not isinstance(value, dict) or not valid_id(value.get("approval_id")):
        return None
    title = value.get("title")
    if not isinstance(title, str) or not title.strip():
        return None
    detail = value.get("detail")
    detail = detail if isinstance(detail, str) else ""
    title = " ".join(title.split())
    if len(title) > TITLE_CHARS:
        title = title[: TITLE_CHARS - 1] + "…"
    return {"approval_id": value["approval_id"], "title": title, "detail": detail[:DETAIL_CHARS]}


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def parse_iso(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.removesuffix("Z"))
    except ValueError:
        return None


# ---- the driver's side (on the run store's thread) ------------------------------------------------


def store_request(engine, message_id: str, request: dict) -> dict:
    """Insert the request (once: an agent repeating it keeps the first); returns it as stored."""
    with engine.begin() as conn:
        row = conn.execute(
            select(approvals_table).where(
                approvals_table.c.message_id == message_id, approvals_table.c.approval_id == request["approval_id"]
            )
        ).first()
        if row is None:
            now = utcnow()
            conn.execute(
                insert(approvals_table).values(
                    message_id=message_id,
                    approval_id=request["approval_id"],
                    title=request["title"],
                    detail=request["detail"],
                    requested_at=now,
                )
            )
            return {**request, "requested_at": iso(now)}
    return event_of(row)


def stored_decision(engine, message_id: str, approval_id: str) -> dict | None:
    """The decision recorded for a request, as the data of an `approval` event; None while open."""
    with engine.connect() as conn:
        row = conn.execute(
            select(approvals_table).where(
                approvals_table.c.message_id == message_id, approvals_table.c.approval_id == approval_id
            )
        ).first()
    if row is None or row.decision is None:
        return None
    return decision_event(row)


def event_of(row) -> dict:
    data = {
        "approval_id": row.approval_id,
        "title": row.title,
        "detail": row.detail,
        "requested_at": iso(row.requested_at),
    }
    if row.decision is not None:
        data.update(decision_event(row))
    return data


def decision_event(row) -> dict:
    return {
        "approval_id": row.approval_id,
        "decision": row.decision,
        "comment": row.comment,
        "decided_by": row.decider,
        "decided_at": iso(row.decided_at),
    }


# ---- what the pages show --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalView:
    message_id: str
    approval_id: str
    title: str
    detail: str
    requested_at: datetime | None = None
    decision: str | None = None
    comment: str | None = None
    decider: str | None = None
    decided_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.decision is None

    @property
    def decision_label(self) -> str:
        return DECISION_LABELS.get(self.decision or "", "Not answered")

    @property
    def decided_line(self) -> str:
        """ "Approved by alice · 21:34 UTC"."""
        if self.decision is None:
            return "Not answered"
        line = f"{self.decision_label} by {self.decider or 'a deleted user'}"
        return line + (f" · {self.decided_at:%H:%M} UTC" if self.decided_at else "")

    @property
    def element_id(self) -> str:
        return f"approval-{self.message_id}-{re.sub(r'[^A-Za-z0-9_-]', '_', self.approval_id)}"

    @property
    def detail_html(self) -> Markup:
        from .rendering import render_message

        return render_message(None, self.detail, final=False)  # sanitized; short, so not cached

    @classmethod
    def from_row(cls, row) -> "ApprovalView":
        return cls(
            message_id=row.message_id,
            approval_id=row.approval_id,
            title=row.title,
            detail=row.detail or "",
            requested_at=row.requested_at,
            decision=row.decision,
            comment=row.comment,
            decider=row.decider,
            decided_at=row.decided_at,
        )

    @classmethod
    def from_event(cls, message_id: str, data: dict) -> "ApprovalView":
        """From ReplyState's record of a run's events."""
        return cls(
            message_id=message_id,
            approval_id=str(data.get("approval_id", "")),
            title=str(data.get("title") or ""),
            detail=str(data.get("detail") or ""),
            requested_at=parse_iso(data.get("requested_at")),
            decision=data.get("decision") if data.get("decision") in DECISIONS else None,
            comment=data.get("comment") if isinstance(data.get("comment"), str) else None,
            decider=data.get("decided_by") if isinstance(data.get("decided_by"), str) else None,
            decided_at=parse_iso(data.get("decided_at")),
        )


def approvals_for(message_ids) -> dict[str, tuple[ApprovalView, ...]]:
    """Each message's approvals, oldest first (one query for a whole conversation)."""
    ids = list(message_ids)
    if not ids:
        return {}
    found: dict[str, list[ApprovalView]] = {}
    rows = db.session.execute(
        select(approvals_table)
        .where(approvals_table.c.message_id.in_(ids))
        .order_by(approvals_table.c.requested_at, approvals_table.c.approval_id)
    ).all()
    for row in rows:
        found.setdefault(row.message_id, []).append(ApprovalView.from_row(row))
    return {key: tuple(value) for key, value in found.items()}


def open_approval(views) -> ApprovalView | None:
    return next((view for view in views or () if view.is_open), None)


# ---- export and import ----------------------------------------------------------------------------


def export_items(views) -> list[dict]:
    return [
        {
            "approval_id": view.approval_id,
            "title": view.title,
            "detail": view.detail,
            "requested_at": _export_time(view.requested_at),
            "decision": view.decision,
            "comment": view.comment,
            "decided_by": view.decider,
            "decided_at": _export_time(view.decided_at),
        }
        for view in views
    ]


def _export_time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") + "Z" if value else None


def parse_items(value, where: str, refuse, timestamp) -> list[dict]:
    """An export's `approvals` list, checked (refuse(status, sentence) on anything wrong)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 100:
        refuse(422, f"{where} must be a list of at most 100 approvals.")
    items, seen = [], set()
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            refuse(422, f"{at} must be an object.")
        if not valid_id(item.get("approval_id")) or item["approval_id"] in seen:
            refuse(422, f"{at}.approval_id must be a unique id of letters, digits and _.:- (at most {ID_CHARS}).")
        seen.add(item["approval_id"])
        texts = {}
        for key, limit, required in (
            ("title", TITLE_CHARS, True),
            ("detail", DETAIL_CHARS, False),
            ("comment", COMMENT_CHARS, False),
            ("decided_by", DECIDER_CHARS, False),
        ):
            text = item.get(key)
            if text is None and not required:
                texts[key] = None
                continue
            if not isinstance(text, str) or len(text) > limit or (required and not text.strip()):
                refuse(422, f"{at}.{key} must be text of at most {limit:,} characters.")
            texts[key] = text
        decision = item.get("decision")
        if decision is not None and decision not in DECISIONS:
            refuse(422, f"{at}.decision must be approve, reject or null.")
        decided_at = timestamp(item.get("decided_at"), f"{at}.decided_at", required=decision is not None)
        items.append(
            {
                "approval_id": item["approval_id"],
                "title": texts["title"],
                "detail": texts["detail"] or "",
                "requested_at": timestamp(item.get("requested_at"), f"{at}.requested_at"),
                "decision": decision,
                "comment": texts["comment"] if decision is not None else None,
                "decider": texts["decided_by"] if decision is not None else None,
                "decided_at": decided_at if decision is not None else None,
            }
        )
    return items


def import_rows(message_id: str, items: list[dict]) -> list[dict]:
    """Rows for the approvals table; who decided is kept by name (the account is not imported)."""
    return [{"message_id": message_id, "decided_by": None, **item} for item in items]
