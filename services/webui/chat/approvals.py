"""Answering an agent's approval request: shared by the JSON API and the page's buttons.

Exactly one decision: it is recorded with a conditional UPDATE (only while undecided and while
the run is live) and committed before the agent is told, from whichever worker took the answer.
The driving worker turns the stored decision into an `approval` event once the agent goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, select, update

from services.gateway.control import answer_approval

from ..approvals import COMMENT_CHARS, DECISIONS, ApprovalView, valid_id
from ..extensions import db
from ..fleet import registry
from ..models import Approval, ConversationSession, Message, Run, utcnow
from .service import ChatError

approvals_table = Approval.__table__
runs_table = Run.__table__
NO_SUCH_REQUEST = "There is no such approval request in this session."


@dataclass(frozen=True)
class Answer:
    view: ApprovalView
    delivered: bool
    problem: str | None  # why the agent did not take it, in a sentence


def clean_answer(decision, comment) -> tuple[str, str | None]:
    if decision not in DECISIONS:
        raise ChatError(422, "Choose a decision: approve or reject.")
    if comment is not None and not isinstance(comment, str):
        raise ChatError(422, "The comment must be text.")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > COMMENT_CHARS:
        raise ChatError(422, f"The comment is {len(comment):,} characters long; the limit is {COMMENT_CHARS:,}.")
    return decision, comment


def _find(session_id: str, approval_id: str):
    if not valid_id(approval_id):
        return None
    return db.session.execute(
        select(Approval, Run)
        .join(Message, Message.id == Approval.message_id)
        .join(Run, Run.message_id == Approval.message_id)
        .where(Message.session_id == session_id, Approval.approval_id == approval_id)
    ).first()


def answer(session: ConversationSession, approval_id: str, decision, comment, user) -> Answer:
    """Record the decision (409 if it was answered or its run ended), then tell the agent."""
    decision, comment = clean_answer(decision, comment)
    found = _find(session.id, approval_id)
    if found is None:
        raise ChatError(404, NO_SUCH_REQUEST)
    approval, run = found
    message_id = approval.message_id
    now = utcnow()
    recorded = db.session.execute(
        update(approvals_table)
        .where(
            approvals_table.c.message_id == message_id,
            approvals_table.c.approval_id == approval_id,
            approvals_table.c.decision.is_(None),
            exists().where(runs_table.c.message_id == message_id, runs_table.c.ended_at.is_(None)),
        )
        .values(decision=decision, comment=comment, decided_by=user.id, decider=user.username, decided_at=now)
    ).rowcount
    db.session.commit()
    db.session.expire_all()
    if not recorded:
        approval, run = _find(session.id, approval_id)
        if approval.decision is not None:
            view = ApprovalView.from_row(approval)
            raise ChatError(409, f"This request was already answered: {view.decided_line}.")
        raise ChatError(409, "This reply has ended, so its approval request can no longer be answered.")
    view = ApprovalView.from_row(approval)
    agent = registry().get(run.agent_id)
    if agent is None:
        return Answer(view, False, f"Agent {run.agent_id} is no longer in the registry.")
    delivered, problem = answer_approval(agent, message_id, approval_id, decision, comment)
    return Answer(view, delivered, problem)


def live_reply_waiting(session_id: str) -> bool:
    """Whether the session's live reply waits for an answer (for a clearer "still writing")."""
    return (
        db.session.scalar(
            select(Message.status)
            .where(Message.session_id == session_id, Message.role == "assistant")
            .order_by(Message.created_at.desc())
            .limit(1)
        )
        == "awaiting_approval"
    )
