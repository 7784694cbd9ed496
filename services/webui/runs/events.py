"""A run's events and the one reducer that turns them into a reply's state.

Every part that needs "the reply as the events so far make it" uses `ReplyState.apply`: the
driver (what it stores), the page stream (what it renders), recovery (what a dead driver's log
adds up to) and replay. Keeping one reducer keeps them from drifting apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..models import FINAL_STATUSES

# Statuses a `status_update` may put a live reply in.
UPDATE_STATUSES = frozenset({"planning", "executing", "awaiting_approval", "streaming"})
# `snapshot` replaces the text so far: sent to a subscriber that fell behind a bounded log.
# `approval` is the decision on a request a `status_update` carried (the driver adds it).
EVENT_TYPES = ("token", "status_update", "usage", "done", "snapshot", "approval")
# A reply keeps its latest MAX_STEPS status updates (its timeline), each detail cut at
# MAX_DETAIL_CHARS: an agent cannot blow up a row, a snapshot or a page.
MAX_STEPS = 200
MAX_DETAIL_CHARS = 2000
MAX_STEP_STATUS_CHARS = 40


def stamp(moment: datetime | None = None) -> str:
    """A server time as events and exports carry it: ISO 8601 UTC with microseconds and Z."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def clean_step(raw) -> dict | None:
    """One timeline step {status, detail, at} from an event or a stored row; None if unusable."""
    if not isinstance(raw, dict) or not isinstance(raw.get("status"), str) or not raw["status"].strip():
        return None
    detail = raw.get("detail")
    detail = detail.strip() if isinstance(detail, str) else ""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    at = raw.get("at")
    return {
        "status": raw["status"].strip()[:MAX_STEP_STATUS_CHARS],
        "detail": detail or None,
        "at": at if isinstance(at, str) and len(at) <= 40 else None,
    }


def clean_steps(raw) -> list[dict]:
    """A stored or sent timeline, bounded: the latest MAX_STEPS usable steps."""
    if not isinstance(raw, list):
        return []
    return [step for step in map(clean_step, raw[-MAX_STEPS:]) if step is not None]


def load_steps(stored: str | None) -> list[dict]:
    """A timeline as `messages.steps` stores it (JSON text, or nothing)."""
    try:
        return clean_steps(json.loads(stored)) if stored else []
    except ValueError:
        return []


def zero_usage() -> dict:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@dataclass(frozen=True)
class StreamEvent:
    """One numbered event of a run, as every subscriber sees it (seq = the SSE id)."""

    seq: int
    type: str
    data: dict

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "type": self.type, "data": self.data}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "StreamEvent":
        value = json.loads(raw)
        return cls(int(value["seq"]), str(value["type"]), dict(value["data"]))


@dataclass
class ReplyState:
    """The reply as its events build it: raw text, status, usage, error, the last seq seen, and
    its progress: the timeline of status updates and the server time of the last output."""

    parts: list[str] = field(default_factory=list)
    chars: int = 0
    status: str = "pending"
    usage: dict | None = None
    error: str | None = None
    seq: int = 0
    # Approval requests by id, in order, with their decisions once given (see `_approval`).
    approvals: dict[str, dict] = field(default_factory=dict)
    approvals_version: int = 0  # changes whenever `approvals` does: a page re-renders them
    steps: list[dict] = field(default_factory=list)  # the latest MAX_STEPS
    steps_seen: int = 0  # every step ever added: numbers steps even after old ones are dropped
    last_output_at: str | None = None  # the newest `at` of a token or status update

    @property
    def text(self) -> str:
        if len(self.parts) > 1:  # join once, keep the joined string: text is read often
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    def apply(self, event: StreamEvent) -> None:
        self.seq = max(self.seq, event.seq)
        data = event.data if isinstance(event.data, dict) else {}
        if event.type in ("token", "status_update"):
            self._output_at(data.get("at"))
        if event.type == "token":
            piece = str(data.get("text", ""))
            self.parts.append(piece)
            self.chars += len(piece)
            if self.status == "pending":
                self.status = "streaming"
        elif event.type == "status_update":
            if self.done:
                return
            if data.get("status") in UPDATE_STATUSES:
                self.status = data["status"]
            if isinstance(data.get("approval"), dict):
                self._approval(data["approval"])
            self.add_step(data)
        elif event.type == "approval":
            self._approval(data)
        elif event.type == "usage":
            self.usage = data
        elif event.type == "snapshot":
            # A subscriber that fell behind a bounded log gets the reply so far in one piece.
            text = str(data.get("text", ""))
            self.parts[:] = [text]
            self.chars = len(text)
            if data.get("status") in UPDATE_STATUSES or data.get("status") == "pending":
                self.status = data["status"]
            for approval in data.get("approvals") or ():
                if isinstance(approval, dict):
                    self._approval(approval)
            if "steps" in data:
                self.replace_steps(data["steps"], data.get("steps_seen"))
            self._output_at(data.get("last_output_at"))
        elif event.type == "done":
            final = data.get("status")
            self.status = final if final in FINAL_STATUSES else "error"
            self.error = data.get("error")
            if isinstance(data.get("content"), str):
                # Recovery tells a client the stored text when it may have shown more.
                self.parts[:] = [data["content"]]
                self.chars = len(data["content"])
            if "steps" in data:  # likewise the stored timeline
                self.replace_steps(data["steps"])

    def add_step(self, data: dict) -> None:
        step = clean_step(data)
        if step is None:
            return
        self.steps.append(step)
        self.steps_seen += 1
        if len(self.steps) > MAX_STEPS:
            del self.steps[: len(self.steps) - MAX_STEPS]

    def replace_steps(self, raw, seen=None) -> None:
        self.steps = clean_steps(raw)
        total = seen if isinstance(seen, int) and not isinstance(seen, bool) else 0
        self.steps_seen = max(total, len(self.steps))

    def _output_at(self, at) -> None:
        # Same-format ISO strings order as the times do.
        if isinstance(at, str) and len(at) <= 40 and (self.last_output_at is None or at > self.last_output_at):
            self.last_output_at = at

    def _approval(self, data: dict) -> None:
        """A request (approval_id, title, detail, requested_at) or its decision (approval_id,
        decision, comment, decided_by, decided_at): merged into the request's record."""
        approval_id = data.get("approval_id")
        if not isinstance(approval_id, str) or not approval_id:
            return
        self.approvals[approval_id] = {**self.approvals.get(approval_id, {}), **data}
        self.approvals_version += 1

    @property
    def open_approval_id(self) -> str | None:
        """The request the run waits on: the newest one without a decision, while awaiting."""
        if self.status != "awaiting_approval":
            return None
        open_ids = [key for key, value in self.approvals.items() if not value.get("decision")]
        return open_ids[-1] if open_ids else None

    def usage_so_far(self) -> dict:
        return self.usage or zero_usage()
