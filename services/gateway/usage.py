"""What a reply cost: the usage a TaskStream reports last, right before done.

The agent's own counts when it sent usable ones, else an estimate from the characters sent
and received (about four per token), priced with the model's rates. A reply that never
reached the agent costs nothing.
"""

from __future__ import annotations

import logging
import math

from .content import content_chars
from .registry import Agent

log = logging.getLogger("switchboard.gateway")


def not_reached() -> dict:
    """The usage of a request that never reached the agent (or that it refused before doing
    any work): such a reply costs nothing, not an estimate of its prompt."""
    return {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd": 0.0,
        "estimated": False,
        "reached_agent": False,
    }


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def count(value) -> int | None:
    """A token count the agent sent, if it is one (a non-negative finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def final_usage(agent: Agent, model_id: str, reported: dict | None, messages: list[dict], text_chars: int) -> dict:
    """The usage event's data: `reported` is the agent's usage event (None if it sent none),
    `text_chars` the length of the reply the consumer was given."""
    model = agent.model(model_id)
    sent = reported or {}
    prompt = count(sent.get("prompt_tokens"))
    completion = count(sent.get("completion_tokens"))
    estimated = prompt is None or completion is None
    if estimated:
        if reported is not None:
            log.warning("Agent %s sent usage without token counts; estimating it.", agent.agent_id)
        prompt = estimate_tokens(sum(content_chars(m.get("content", "")) for m in messages))
        completion = estimate_tokens(text_chars)
    total = count(sent.get("total_tokens")) if not estimated else None
    cost = sent.get("cost_usd") if not estimated else None
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
        cost = model.cost_usd(prompt, completion) if model else 0.0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if total is not None else prompt + completion,
        "cost_usd": float(cost),
        "estimated": estimated,
    }
