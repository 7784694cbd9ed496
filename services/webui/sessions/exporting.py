"""Export a session: a JSON document (complete, re-importable by `importing`) or Markdown (readable).

The JSON holds the whole message tree with runs, approvals and attachments; the Markdown shows the
current path, every message body fenced so that no viewer renders agent output as HTML.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime

from .. import approvals
from ..attachments import transfer as attachment_transfer
from ..models import ConversationSession, utcnow
from .review import TOKEN_KEYS, Review, build_review
from .timeline import steps_markdown

FORMAT = "switchboard.session"
VERSION = 1


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") + "Z" if value else None


def usage_totals(messages) -> dict:
    """Sums of what the agents reported (no price estimates: the file must be self-consistent)."""
    totals = {key: 0 for key in TOKEN_KEYS}
    cost = 0.0
    for message in messages:
        usage = message.get("usage") or {}
        for key in TOKEN_KEYS:
            if isinstance(usage.get(key), int) and not isinstance(usage.get(key), bool):
                totals[key] += usage[key]
        if isinstance(usage.get("cost_usd"), (int, float)) and not isinstance(usage.get("cost_usd"), bool):
            cost += usage["cost_usd"]
    return {"messages": len(messages), **totals, "cost_usd": round(cost, 8)}


def session_document(review: Review, exported_by: str) -> dict:
    session = review.session
    messages = []
    files = attachment_transfer.listed(view.message.id for view in review.messages if view.message.role == "user")
    for view in review.messages:
        message, run = view.message, view.run
        messages.append(
            {
                "id": message.id,
                "parent_id": review.parents.get(message.id),
                "role": message.role,
                "message_type": message.message_type,
                "agent_id": message.agent_id,
                "content": message.content,
                "status": message.status,
                "usage": view.usage,
                "model_id": message.model_id,
                "steps": message.steps,
                "error": message.error,
                "created_at": iso(message.created_at),
                "completed_at": iso(message.completed_at),
                "run": None
                if run is None
                else {
                    "agent_id": run.agent_id,
                    "model_id": run.model_id,
                    "created_at": iso(run.created_at),
                    "ended_at": iso(run.ended_at),
                    "cancel_requested_at": iso(run.cancel_requested_at),
                },
            }
        )
        if view.approvals:
            messages[-1]["approvals"] = approvals.export_items(view.approvals)
        if message.id in files:
            messages[-1]["attachments"] = files[message.id]
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": iso(utcnow()),
        "exported_by": exported_by,
        "session": {
            "id": session.id,
            "title": session.title,
            "agent_id": session.agent_id,
            "agent_name": session.agent_name,
            "parent_role": session.parent_role,
            "model_id": session.model_id,
            "created_at": iso(session.created_at),
            "updated_at": iso(session.updated_at),
            "archived_at": iso(session.archived_at),
            # The whole tree travels (every message with its parent); this is the path shown.
            "current_leaf_id": review.path[-1].message.id if review.path else None,
        },
        "messages": messages,
        "totals": usage_totals(messages),
    }


def export_json(session: ConversationSession, exported_by: str) -> str:
    document = session_document(build_review(session), exported_by)
    attachment_transfer.add_contents(document)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _cost(value: float | None, estimated: bool = False) -> str:
    if value is None:
        return "—"
    return ("≈ " if estimated else "") + f"${value:,.6f}".rstrip("0").rstrip(".")


_BACKTICK_RUN = re.compile(r"`+")


def _fenced(text: str, info: str) -> list[str]:
    """`text` as a fenced code block: shown verbatim, never as HTML, by any markdown viewer.

    Message bodies are fenced rather than escaped: agent output may hold raw HTML, and telling
    reliably where markdown would treat it as HTML (code spans, unclosed fences inside lists...)
    takes a full CommonMark parse, while a fence longer than any backtick run in the text can
    never be closed from inside it.
    """
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", text, fence]


def _inline(value: str) -> str:
    """A title, name or error on one markdown line: its HTML shown as text."""
    return html.escape(" ".join(str(value).split()), quote=False)


def _code(value: str) -> str:
    """An id as an inline code span whose delimiters no backtick inside it can match."""
    value = " ".join(str(value).split())
    longest = max((len(run) for run in _BACKTICK_RUN.findall(value)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {value} {ticks}" if longest else f"`{value}`"


def export_markdown(session: ConversationSession) -> str:
    review = build_review(session)
    totals = review.totals
    lines = [
        f"# {_inline(session.title)}",
        "",
        f"- Agent: {_inline(session.agent_name)} ({_code(session.agent_id)})",
        f"- Model: {_code(session.model_id)}",
        f"- Owner: {_inline(review.owner)}",
        f"- Created: {_when(session.created_at)}",
        f"- Last activity: {_when(session.updated_at)}",
        f"- State: {'archived ' + _when(session.archived_at) if session.archived_at else 'active'}",
        f"- Messages: {totals.messages} ({totals.replies} replies)",
        f"- Tokens: {totals.total_tokens:,} ({totals.prompt_tokens:,} in, {totals.completion_tokens:,} out)",
        f"- Cost: {_cost(totals.cost_usd, totals.cost_estimated)}",
        f"- Duration: {totals.duration or '—'}",
        *(
            ["- Branches: other versions of some messages exist; this file shows the current path."]
            if review.branched
            else []
        ),
        "",
    ]
    files = attachment_transfer.listed(view.message.id for view in review.messages if view.message.role == "user")
    for view in review.path:
        message = view.message
        heading = message.role.capitalize()
        if message.role == "assistant" and message.agent_id:
            heading += f" ({_inline(message.agent_id)})"
        if view.model_name:
            heading += f" · {_inline(view.model_name)}"
        lines += ["---", "", f"## {heading} · {_when(message.created_at)} · {message.status}", ""]
        if message.content:
            lines += [*_fenced(message.content, "markdown" if message.role == "assistant" else "text"), ""]
        else:
            lines += ["_(no text)_", ""]
        for approval in view.approvals:
            lines += _approval_lines(approval)
        if message.id in files:
            lines += [_inline(attachment_transfer.markdown_line(files[message.id])), ""]
        details = []
        if view.usage:
            details.append(
                f"tokens {int(view.usage.get('prompt_tokens') or 0):,} in / "
                f"{int(view.usage.get('completion_tokens') or 0):,} out"
            )
        if view.cost_usd is not None:
            details.append(f"cost {_cost(view.cost_usd, view.cost_estimated)}")
        if view.duration is not None:
            details.append(f"took {view.duration.total_seconds():.1f} s")
        if view.outcome:
            details.append(view.outcome)
        elif message.error:
            details.append(f"error: {message.error}")
        if details:
            lines += ["_" + _inline(" · ".join(details)).replace("_", r"\_") + "_", ""]
        lines += steps_markdown(message.steps)
    return "\n".join(lines)


def _approval_lines(approval) -> list[str]:
    """An approval request (its markdown detail fenced, like every body) and its answer."""
    lines = [f"**Approval requested** · {_when(approval.requested_at)}: {_inline(approval.title)}", ""]
    if approval.detail:
        lines += [*_fenced(approval.detail, "markdown"), ""]
    answer = approval.decision_label
    if approval.decision is not None:
        answer += f" by {_inline(approval.decider or 'a deleted user')} · {_when(approval.decided_at)}"
    lines += [f"**{answer}**" + (f": {_inline(approval.comment)}" if approval.comment else ""), ""]
    return lines


def export_filename(session: ConversationSession, extension: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", session.title.lower()).strip("-")[:50] or "session"
    return f"switchboard-{slug}-{session.id[:8]}.{extension}"
