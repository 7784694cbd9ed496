"""The usage overview: GET /usage (page), /usage.csv (download) and /api/usage (JSON).

A person sees their own replies' totals; an admin sees everyone's (with a per-user table) or one
user's. Money and tokens are formatted by chat/display.py; the CSV and the JSON carry raw numbers.
"""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, jsonify, render_template, request
from flask_login import current_user
from sqlalchemy import select

from ..chat.display import cost_line, format_cost
from ..errors import RequestError
from ..extensions import db
from ..fleet import registry
from ..models import User
from .queries import Usage, UsageFilters, build_usage, parse_filters

bp = Blueprint("usage", __name__)

CSV_HEADER = ("day", "user", "agent_id", "model_id", "replies", "prompt_tokens", "completion_tokens", "cost_usd")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _names() -> tuple[dict, dict]:
    """Agent and model names from the registry, for ids it still knows."""
    try:
        agents = registry().agents
    except Exception:  # a remote registry that cannot answer: show the ids
        return {}, {}
    return (
        {agent.agent_id: agent.name for agent in agents},
        {model.model_id: model.name for agent in agents for model in agent.models},
    )


@bp.app_template_global("usage_cost")
def usage_cost(value: float) -> str:
    return format_cost(value)


@bp.get("/usage")
def index():
    try:
        filters = parse_filters(request.args, current_user)
        usage, error, status = build_usage(filters), None, 200
    except RequestError as exc:
        if exc.status != 400:
            raise
        # The page again with the default range, the sentence above it.
        filters = parse_filters({}, current_user)
        usage, error, status = None, exc.message, 400
    agent_names, model_names = _names()
    users = sorted(db.session.scalars(select(User.username))) if current_user.is_admin else []
    return render_template(
        "usage/index.html",
        usage=usage,
        filters=filters,
        error=error,
        args=request.args,
        users=users,
        agent_names=agent_names,
        model_names=model_names,
        cost_line=cost_line,
    ), status


def safe_cell(value) -> str | int | float:
    """A value as a CSV cell a spreadsheet shows as text: a leading ' defuses formulas."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def usage_csv(usage: Usage) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for row in usage.rows:
        tally = row.tally
        writer.writerow(
            [
                safe_cell(row.day),
                safe_cell(row.username),
                safe_cell(row.agent_id),
                safe_cell(row.model_id),
                tally.replies,
                tally.prompt_tokens,
                tally.completion_tokens,
                f"{tally.cost_usd:.6f}",
            ]
        )
    return out.getvalue()


def csv_filename(filters: UsageFilters) -> str:
    who = "all" if filters.everyone else "".join(c if c.isalnum() else "-" for c in filters.user)[:40]
    return f"switchboard-usage-{who}-{filters.first_day.isoformat()}-{filters.last_day.isoformat()}.csv"


@bp.get("/usage.csv")
def download():
    filters = parse_filters(request.args, current_user)
    response = Response(usage_csv(build_usage(filters)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{csv_filename(filters)}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _tallies(tallies) -> list[dict]:
    return [
        {
            "key": t.key,
            "replies": t.replies,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "cost_usd": round(t.cost_usd, 8),
        }
        for t in tallies
    ]


@bp.get("/api/usage")
def api():
    filters = parse_filters(request.args, current_user)
    usage = build_usage(filters)
    total = _tallies([usage.total])[0]
    total.pop("key")
    return jsonify(
        {
            "from": filters.first_day.isoformat(),
            "to": filters.last_day.isoformat(),
            "user": filters.user,
            "total": total,
            "by_day": _tallies(usage.by_day),
            "by_agent": _tallies(usage.by_agent),
            "by_model": _tallies(usage.by_model),
            "by_user": _tallies(usage.by_user),
        }
    )
