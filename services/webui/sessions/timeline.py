"""A reply's timeline (its agent's status updates) in the Markdown export: agent text made inert."""

from __future__ import annotations

import re

_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def literal(value: str) -> str:
    """Agent text on one markdown line, every ASCII punctuation escaped: no link, emphasis or
    HTML a viewer could make of it (CommonMark shows a backslash-escaped character as itself)."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(str(value).split()))


def steps_markdown(steps: list[dict]) -> list[str]:
    """A reply's timeline as a list: time, status, detail."""
    if not steps:
        return []
    lines = ["Steps:", ""]
    for step in steps:
        at = step.get("at")
        when = at[11:19] if isinstance(at, str) and len(at) >= 19 else "--:--:--"
        detail = f" · {literal(step['detail'])}" if step.get("detail") else ""
        lines.append(f"- {when} · {literal(step['status'])}{detail}")
    return [*lines, ""]
