"""Import a session from a JSON export (see `exporting`): parse and validate it, then insert it.

An import is validated completely before anything is written, then written in one transaction:
a file that is not ours, too large or inconsistent is refused with a sentence naming the problem
and leaves nothing behind. Export → import → export gives the same document apart from the ids
(new ones are made) and the export's own metadata (`exported_at`, `exported_by`).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import insert

from .. import approvals
from ..attachments import service as attachments
from ..attachments import transfer as attachment_transfer
from ..errors import bounded_number, parse_datetime, parse_json
from ..extensions import db
from ..models import (
    LIVE_STATUSES,
    MESSAGE_ROLES,
    MESSAGE_STATUSES,
    MESSAGE_TYPES,
    USAGE_MAX_COST_USD,
    USAGE_MAX_TOKENS,
    ConversationSession,
    Message,
    Run,
    new_id,
    usage_columns,
    utcnow,
)
from ..runs.events import MAX_DETAIL_CHARS, MAX_STEP_STATUS_CHARS, MAX_STEPS
from .exporting import FORMAT, VERSION, iso, usage_totals
from .queries import SessionsError
from .review import TOKEN_KEYS

MAX_IMPORT_MESSAGES = 20_000
TITLE_MAX = 200
# An import may hold only what Switchboard itself writes: the kinds of message it makes, token
# counts and costs no real reply reaches, times between the project's start and tomorrow.
MAX_USAGE_KEYS = 16
MAX_USAGE_TEXT = 64
EARLIEST = datetime(2000, 1, 1)
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ImportRefused(SessionsError):
    pass


def import_limit() -> int:
    return current_app.config["SESSIONS_IMPORT_MAX_BYTES"]


def _refuse(status: int, message: str):
    raise ImportRefused(status, message)


def _timestamp(value, where: str, required: bool = True) -> datetime | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        _refuse(422, f"{where} must be a timestamp like 2026-01-31T12:00:00Z.")
    parsed = parse_datetime(value, where, status=422)
    if not EARLIEST <= parsed <= utcnow() + timedelta(days=1):
        _refuse(422, f"{where} is out of range: {value[:40]!r} is not a time this export can come from.")
    return parsed


def _text(value, where: str, limit: int, *, required: bool = True, allow_empty: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        _refuse(422, f"{where} must be text.")
    if not allow_empty and not value.strip():
        _refuse(422, f"{where} must not be empty.")
    if len(value) > limit:
        _refuse(422, f"{where} is {len(value):,} characters long; the limit is {limit:,}.")
    return value


def _usage(value, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _refuse(422, f"{where} must be an object or null.")
    if len(value) > MAX_USAGE_KEYS:
        _refuse(422, f"{where} has {len(value)} entries; at most {MAX_USAGE_KEYS} are allowed.")
    for key in TOKEN_KEYS:
        if (
            key in value
            and value[key] is not None
            and not bounded_number(value[key], integer=True, maximum=USAGE_MAX_TOKENS)
        ):
            _refuse(422, f"{where}.{key} must be a whole number of tokens from 0 to {USAGE_MAX_TOKENS:,}.")
    cost = value.get("cost_usd")
    if cost is not None and not bounded_number(cost, integer=False, maximum=USAGE_MAX_COST_USD):
        _refuse(422, f"{where}.cost_usd must be a non-negative number up to {USAGE_MAX_COST_USD:,}.")
    for key, item in value.items():
        short = (
            item is None
            or isinstance(item, bool)
            or (isinstance(item, int) and abs(item) <= USAGE_MAX_TOKENS)
            or (isinstance(item, float) and math.isfinite(item) and abs(item) <= USAGE_MAX_COST_USD)
            or (isinstance(item, str) and len(item) <= MAX_USAGE_TEXT)
        )
        if not isinstance(key, str) or len(key) > 64 or not short:
            _refuse(422, f"{where} may hold only named numbers and short values.")
    return value


def _steps(value, where: str) -> list[dict]:
    """A reply's timeline: at most MAX_STEPS of {status, detail, at}, as the run engine keeps it."""
    if value is None:
        return []
    if not isinstance(value, list):
        _refuse(422, f"{where} must be a list or null.")
    if len(value) > MAX_STEPS:
        _refuse(422, f"{where} has {len(value):,} steps; at most {MAX_STEPS} are kept.")
    steps = []
    for index, step in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(step, dict) or set(step) - {"status", "detail", "at"}:
            _refuse(422, f"{at} must be an object with status, detail and at.")
        status = _text(step.get("status"), f"{at}.status", MAX_STEP_STATUS_CHARS)
        detail = _text(step.get("detail"), f"{at}.detail", MAX_DETAIL_CHARS, required=False, allow_empty=True)
        when = _timestamp(step.get("at"), f"{at}.at", required=False)
        steps.append({"status": status, "detail": detail or None, "at": iso(when)})
    return steps


def parse_import(raw: bytes | str) -> dict:
    """Validate an export file completely; returns the plan for `import_document`."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    limit = import_limit()
    content_limits = {
        "user": current_app.config["MAX_MESSAGE_CHARS"],
        "assistant": current_app.config["MAX_REPLY_CHARS"],
        "system": current_app.config["MAX_REPLY_CHARS"],
    }
    if size > limit:
        _refuse(413, f"The file is {size / 1_048_576:.1f} MB; the import limit is {limit / 1_048_576:.1f} MB.")
    if size == 0:
        _refuse(400, "The file is empty. Choose a JSON file exported from Switchboard.")
    document = parse_json(
        raw, "The file", invalid="The file is not JSON. Choose a JSON file exported from Switchboard."
    )
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        _refuse(400, "This file is not a Switchboard session export (its format is not switchboard.session).")
    if document.get("version") != VERSION:
        _refuse(
            400,
            f"This export has version {str(document.get('version'))[:20]}; this Switchboard reads version {VERSION}.",
        )

    session = document.get("session")
    if not isinstance(session, dict):
        _refuse(422, "session must be an object.")
    agent_id = _text(session.get("agent_id"), "session.agent_id", 64)
    if not _AGENT_ID.match(agent_id):
        _refuse(422, f"session.agent_id {agent_id[:40]!r} is not a valid agent id.")
    plan = {
        "title": " ".join(_text(session.get("title"), "session.title", TITLE_MAX).split()),
        "agent_id": agent_id,
        "agent_name": _text(session.get("agent_name"), "session.agent_name", 128),
        "parent_role": _text(session.get("parent_role", ""), "session.parent_role", 64, allow_empty=True),
        "model_id": _text(session.get("model_id"), "session.model_id", 128),
        "created_at": _timestamp(session.get("created_at"), "session.created_at"),
        "updated_at": _timestamp(session.get("updated_at"), "session.updated_at"),
        "archived_at": _timestamp(session.get("archived_at"), "session.archived_at", required=False),
        "messages": [],
    }
    if plan["updated_at"] < plan["created_at"]:
        _refuse(422, "session.updated_at is earlier than session.created_at.")

    messages = document.get("messages")
    if not isinstance(messages, list):
        _refuse(422, "messages must be a list.")
    if len(messages) > MAX_IMPORT_MESSAGES:
        _refuse(413, f"The export holds {len(messages):,} messages; the import limit is {MAX_IMPORT_MESSAGES:,}.")
    seen_ids: set[str] = set()
    previous: datetime | None = None
    # Exports before the message tree have no parent ids: their messages are one path.
    tree_export = any(isinstance(item, dict) and "parent_id" in item for item in messages)
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            _refuse(422, f"{where} must be an object.")
        old_id = _text(item.get("id"), f"{where}.id", 64)
        if old_id in seen_ids:
            _refuse(422, f"{where}.id {old_id[:40]!r} appears twice.")
        parent = _text(item.get("parent_id"), f"{where}.parent_id", 64, required=False) if tree_export else None
        if parent is not None and parent not in seen_ids:
            _refuse(422, f"{where}.parent_id {parent[:40]!r} names no earlier message.")
        seen_ids.add(old_id)
        role = item.get("role")
        if role not in MESSAGE_ROLES:
            _refuse(422, f"{where}.role must be one of {', '.join(MESSAGE_ROLES)}.")
        status = item.get("status")
        if status not in MESSAGE_STATUSES:
            _refuse(422, f"{where}.status must be one of {', '.join(MESSAGE_STATUSES)}.")
        created = _timestamp(item.get("created_at"), f"{where}.created_at")
        completed = _timestamp(item.get("completed_at"), f"{where}.completed_at", required=False)
        if completed is not None and completed < created:
            _refuse(422, f"{where}.completed_at is earlier than its created_at.")
        if previous is not None and created < previous:
            _refuse(422, f"{where} is out of order: messages must be sorted by created_at.")
        previous = created
        error = _text(item.get("error"), f"{where}.error", 10_000, required=False, allow_empty=True)
        message_agent = _text(item.get("agent_id"), f"{where}.agent_id", 64, required=False)
        if message_agent is not None and not _AGENT_ID.match(message_agent):
            _refuse(422, f"{where}.agent_id {message_agent[:40]!r} is not a valid agent id.")
        model_id = _text(item.get("model_id"), f"{where}.model_id", 128, required=False)
        if model_id is not None and role != "assistant":
            _refuse(422, f"{where}.model_id is set, but only replies (role assistant) are written by a model.")
        message_type = item.get("message_type", "chat")
        if message_type not in MESSAGE_TYPES:
            _refuse(422, f"{where}.message_type must be one of {', '.join(MESSAGE_TYPES)}.")
        steps = _steps(item.get("steps"), f"{where}.steps")
        if steps and role != "assistant":
            _refuse(422, f"{where}.steps is set, but only replies (role assistant) have steps.")
        message = {
            "old_id": old_id,
            "parent": parent if tree_export else (plan["messages"][-1]["old_id"] if plan["messages"] else None),
            "role": role,
            "message_type": message_type,
            "agent_id": message_agent,
            "content": _text(item.get("content"), f"{where}.content", content_limits[role], allow_empty=True),
            "status": status,
            "usage": _usage(item.get("usage"), f"{where}.usage"),
            "model_id": model_id,
            "steps": steps,
            "error": error,
            "created_at": created,
            "completed_at": completed,
            "run": None,
            "approvals": approvals.parse_items(item.get("approvals"), f"{where}.approvals", _refuse, _timestamp),
            "attachments": attachment_transfer.parse(item.get("attachments"), where, _refuse),
        }
        if message["approvals"] and role != "assistant":
            _refuse(422, f"{where}.approvals is set, but only replies (role assistant) ask for approval.")
        if status in LIVE_STATUSES:
            # Nothing runs it here: an export taken mid-reply is imported as interrupted.
            message["status"] = "interrupted"
            message["error"] = error or "This reply was still being written when the session was exported."
            message["completed_at"] = completed or created
        run = item.get("run")
        if run is not None:
            if role != "assistant":
                _refuse(422, f"{where}.run is set, but only replies (role assistant) have runs.")
            if not isinstance(run, dict):
                _refuse(422, f"{where}.run must be an object or null.")
            run_created = _timestamp(run.get("created_at"), f"{where}.run.created_at")
            ended = _timestamp(run.get("ended_at"), f"{where}.run.ended_at", required=False)
            if ended is not None and ended < run_created:
                _refuse(422, f"{where}.run.ended_at is earlier than its created_at.")
            run_agent = _text(run.get("agent_id"), f"{where}.run.agent_id", 64)
            if not _AGENT_ID.match(run_agent):
                _refuse(422, f"{where}.run.agent_id {run_agent[:40]!r} is not a valid agent id.")
            message["run"] = {
                "agent_id": run_agent,
                "model_id": _text(run.get("model_id"), f"{where}.run.model_id", 128),
                "created_at": run_created,
                "ended_at": ended or message["completed_at"] or created,
                "cancel_requested_at": _timestamp(
                    run.get("cancel_requested_at"), f"{where}.run.cancel_requested_at", required=False
                ),
            }
        if role == "assistant" and "model_id" not in item:
            # An export from before replies recorded their model: the run's, else the session's.
            message["model_id"] = message["run"]["model_id"] if message["run"] else plan["model_id"]
        plan["messages"].append(message)

    leaf = _text(session.get("current_leaf_id"), "session.current_leaf_id", 64, required=False)
    if leaf is not None and leaf not in seen_ids:
        _refuse(422, f"session.current_leaf_id {leaf[:40]!r} names no message of the export.")
    plan["current_leaf"] = leaf if leaf is not None else (plan["messages"][-1]["old_id"] if plan["messages"] else None)

    totals = document.get("totals")
    if totals is not None:
        expected = usage_totals(plan["messages"])
        if not isinstance(totals, dict):
            _refuse(422, "totals must be an object.")
        for key, value in expected.items():
            given = totals.get(key)
            if not isinstance(given, (int, float)) or isinstance(given, bool) or abs(given - value) > 1e-6:
                _refuse(422, f"totals.{key} is {str(given)[:20]}, but the messages add up to {value}.")
    return plan


def import_document(plan: dict, user) -> ConversationSession:
    """Create the session, its messages and runs for `user` in one transaction."""
    session_id = new_id()
    try:
        session = ConversationSession(
            id=session_id,
            user_id=user.id,
            agent_id=plan["agent_id"],
            agent_name=plan["agent_name"],
            parent_role=plan["parent_role"],
            model_id=plan["model_id"],
            title=plan["title"],
            created_at=plan["created_at"],
            updated_at=plan["updated_at"],
            archived_at=plan["archived_at"],
        )
        db.session.add(session)
        db.session.flush()
        message_rows, run_rows, approval_rows, new_ids = [], [], [], {}
        for item in plan["messages"]:
            message_id = new_ids[item["old_id"]] = new_id()
            message_rows.append(
                {
                    "id": message_id,
                    "parent_id": new_ids.get(item["parent"]) if item["parent"] is not None else None,
                    "session_id": session_id,
                    "role": item["role"],
                    "message_type": item["message_type"],
                    "agent_id": item["agent_id"],
                    "content": item["content"],
                    "status": item["status"],
                    "usage": json.dumps(item["usage"], sort_keys=True) if item["usage"] is not None else None,
                    **usage_columns(item["usage"]),
                    "model_id": item["model_id"],
                    "steps": json.dumps(item["steps"], ensure_ascii=False) if item["steps"] else None,
                    "error": item["error"],
                    "created_at": item["created_at"],
                    "completed_at": item["completed_at"],
                }
            )
            approval_rows += approvals.import_rows(message_id, item["approvals"])
            if item["run"] is not None:
                run_rows.append(
                    {
                        "message_id": message_id,
                        "session_id": session_id,
                        "owner": None,
                        "beat_at": None,
                        "last_seq": 0,
                        **item["run"],
                    }
                )
        if message_rows:
            db.session.execute(insert(Message.__table__), message_rows)
        for row, item in zip(message_rows, plan["messages"]):
            attachments.link(row["id"], attachment_transfer.restore(user, item["attachments"]))
        if run_rows:
            db.session.execute(insert(Run.__table__), run_rows)
        if approval_rows:
            db.session.execute(insert(approvals.approvals_table), approval_rows)
        session.current_leaf_id = new_ids.get(plan["current_leaf"]) if plan["current_leaf"] else None
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return session
