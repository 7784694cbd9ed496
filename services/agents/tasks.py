"""A reference agent's task: its state while it streams, and the reply it is going to send.

Both endpoints (native `/tasks` and OpenAI's `/v1/chat/completions`) keep one Task per
request in the agent's task table, so `GET /tasks/{id}` can tell how any of them ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from gevent.event import Event

from services.agents.approvals import PendingApproval
from services.agents.replies import Knobs, content_chars, parse_directives, reply_tokens, split_content
from services.gateway.registry import Agent, Model


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Task:
    task_id: str
    session_id: str
    model: str
    status: str = "running"
    tokens_sent: int = 0
    chars_sent: int = 0  # of token text: lets a test check a client got exactly what was sent
    started_at: str = field(default_factory=iso_now)
    stopped_at: str | None = None
    cancel: Event = field(default_factory=Event)
    pending: PendingApproval | None = None
    decisions: list = field(default_factory=list)  # every decision received, in order

    def stop(self, status: str) -> None:
        if self.status == "running":
            self.status, self.stopped_at = status, iso_now()

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "session_id": self.session_id,
            "model": self.model,
            "status": self.status,
            "tokens_sent": self.tokens_sent,
            "chars_sent": self.chars_sent,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "approvals": list(self.decisions),
        }


class Crash(Exception):
    """Raised inside a stream to drop the connection without a done event."""


@dataclass(frozen=True)
class Plan:
    """What a request asks for: the directives, the cleaned text, the reply's tokens and
    the prompt's size in tokens (about four characters each)."""

    knobs: Knobs
    cleaned: str
    tokens: list[str]
    prompt_tokens: int


def plan_reply(agent: Agent, parent_name: str | None, model: Model, messages: list[dict]) -> Plan:
    """The reply to `messages`, steered by the directives in the last user message."""
    last_user, attached = split_content(next((m["content"] for m in reversed(messages) if m["role"] == "user"), ""))
    knobs, cleaned = parse_directives(last_user, model.model_id)
    tokens = reply_tokens(knobs, cleaned, agent.name, agent.agent_id, parent_name, messages, attached)
    prompt_tokens = math.ceil(sum(content_chars(m["content"]) for m in messages) / 4)
    return Plan(knobs, cleaned, tokens, prompt_tokens)
