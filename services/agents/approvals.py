"""The reference agent's approvals: `@@approval="what it wants to do"` makes it ask first.

It sends `status_update {status: awaiting_approval, approval: {approval_id, title, detail}}`,
then waits (on gevent Events, so a cancel still lands at once) for
`POST /tasks/{task_id}/approvals/{approval_id}` `{decision: approve|reject, comment}`.
Each task records the decisions it received, so tests can prove it got exactly one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import gevent
from gevent.event import Event

DECISIONS = ("approve", "reject")
MAX_COMMENT_CHARS = 2000


@dataclass
class PendingApproval:
    approval_id: str
    title: str
    answered: Event = field(default_factory=Event)
    decision: str | None = None
    comment: str = ""

    @classmethod
    def new(cls, title: str) -> "PendingApproval":
        return cls(approval_id=f"ap-{uuid.uuid4().hex[:12]}", title=title)

    def request(self, agent_name: str, topic: str) -> dict:
        """The status_update's data: the request, with some markdown saying what it means."""
        detail = (
            f"**{agent_name}** wants to: {self.title}\n\n"
            f"- Requested while working on: {topic or 'your request'}\n"
            "- Approve and it goes on with the reply.\n"
            "- Reject and it stops without doing it.\n"
        )
        return {
            "status": "awaiting_approval",
            "detail": f"{agent_name} is waiting for approval.",
            "approval": {"approval_id": self.approval_id, "title": self.title, "detail": detail},
        }

    def wait(self, cancel: Event) -> bool:
        """Until answered (True) or cancelled (False), whichever comes first."""
        gevent.wait([self.answered, cancel], count=1)
        return self.answered.is_set() and not cancel.is_set()

    def rejected_text(self) -> str:
        reason = f" You said: {self.comment}" if self.comment.strip() else ""
        return f"I did not do it: you rejected the request to {self.title}.{reason}\n"


def answer_problem(body) -> str | None:
    """What is wrong with an answer's body, if anything."""
    if not isinstance(body, dict) or body.get("decision") not in DECISIONS:
        return "'decision' must be 'approve' or 'reject'"
    comment = body.get("comment", "")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        return f"'comment' must be text of at most {MAX_COMMENT_CHARS} characters"
    return None
