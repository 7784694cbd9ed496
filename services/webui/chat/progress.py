"""What a reply shows of its progress: the timeline of its agent's status updates, and, while it
is written, how long it has taken and, once STALL_NOTICE_SECONDS pass without output, how long
the agent has said nothing.

The server gives every time (ISO UTC data attributes, the server's own clock included), so a
reload shows the right figures; static/js/progress.js keeps them counting between renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from flask import current_app

from ..models import utcnow
from ..runs.events import ReplyState, stamp
from .display import STATUS_LABELS

# While a reply waits for a person, its agent's silence is expected: no stall notice then.
QUIET_STATUSES = ("awaiting_approval",)


def parse_stamp(value) -> datetime | None:
    """An `at` as the run engine writes it, as a naive UTC datetime (None if it is not one)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.removesuffix("Z"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def utc_stamp(moment: datetime) -> str:
    return stamp(moment.replace(tzinfo=timezone.utc))


def format_seconds(seconds: float) -> str:
    """12 s, 1 min 05 s, 1 h 02 min (progress.js formats the same way)."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass(frozen=True)
class StepView:
    number: int
    status: str
    detail: str | None
    at: datetime | None
    started: datetime | None

    @property
    def label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status.replace("_", " ").capitalize())

    @property
    def chip(self) -> str:
        """The status's class suffix: one the page knows, else a neutral one (agent text is no class)."""
        return self.status if self.status in STATUS_LABELS else "other"

    @property
    def iso(self) -> str:
        return utc_stamp(self.at) if self.at else ""

    @property
    def clock(self) -> str:
        return self.at.strftime("%Y-%m-%d %H:%M:%S UTC") if self.at else ""

    @property
    def offset(self) -> str:
        """When, counted from the reply's start ("+3 s"); the clock time when that is unknown."""
        if self.at is None:
            return ""
        if self.started is None:
            return self.at.strftime("%H:%M:%S")
        return "+" + format_seconds((self.at - self.started).total_seconds())


def step_views(steps, started: datetime | None, first: int = 1) -> list[StepView]:
    return [
        StepView(number, step["status"], step.get("detail"), parse_stamp(step.get("at")), started)
        for number, step in enumerate(steps or (), start=first)
    ]


def first_step_number(state: ReplyState) -> int:
    return state.steps_seen - len(state.steps) + 1


@dataclass(frozen=True)
class ProgressView:
    started: str
    last_output: str
    now: str
    stall_after: float
    elapsed: str
    stalled_for: str | None


def progress_view(m) -> ProgressView:
    """The live line of message view `m`: elapsed time, and the stall notice when it is due."""
    now = utcnow()
    started = m.created_at or now
    last = parse_stamp(m.last_output_at)
    if last is None and m.steps:  # a page load knows only the stored timeline; the stream knows more
        last = parse_stamp(m.steps[-1].get("at"))
    last = max(last or started, started)
    stall_after = float(current_app.config["STALL_NOTICE_SECONDS"])
    silent = (now - last).total_seconds()
    stalled = stall_after > 0 and silent >= stall_after and m.status not in QUIET_STATUSES
    return ProgressView(
        started=utc_stamp(started),
        last_output=utc_stamp(last),
        now=utc_stamp(now),
        stall_after=stall_after,
        elapsed="Working · " + format_seconds((now - started).total_seconds()),
        stalled_for=f"No output for {format_seconds(silent)}" if stalled else None,
    )


@dataclass
class TimelineSent:
    """What a page holds of a live reply's timeline and last-output mark (page_stream.py)."""

    seen: int = 0  # the state's steps_seen when last sent
    first: int = 1  # the number of the oldest step the page holds
    output_at: str | None = None

    def whole(self, state: ReplyState) -> dict:
        self.seen, self.first, self.output_at = state.steps_seen, first_step_number(state), state.last_output_at
        return {"steps_first": self.first}

    def delta(self, state: ReplyState, started: datetime | None) -> dict:
        """Template values for what changed: new steps (appended), dropped ones (deleted), the
        progress line when output came. Each step is sent once and deleted at most once."""
        changes: dict = {}
        new = state.steps_seen - self.seen
        if new > 0:
            first = first_step_number(state)
            if new >= len(state.steps):  # nothing the page shows is kept any more
                changes.update(steps_replace=True, new_steps=step_views(state.steps, started, first))
            else:
                changes["new_steps"] = step_views(state.steps[-new:], started, state.steps_seen - new + 1)
                changes["drop_steps"] = range(self.first, first)
            changes["steps_count"] = len(state.steps)
            self.seen, self.first = state.steps_seen, first
        if state.last_output_at != self.output_at:
            changes["progress_oob"] = True
            self.output_at = state.last_output_at
        return changes
