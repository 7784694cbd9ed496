"""The events a TaskStream yields, and how native agents' SSE messages become them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .sse import SSEMessage

EVENT_TYPES = ("token", "status_update", "usage", "done")
# What done.data["status"] can be after the gateway: the agent's three plus "interrupted".
FINAL_STATUSES = ("complete", "cancelled", "error", "interrupted")
AGENT_FINAL_STATUSES = ("complete", "cancelled", "error")


@dataclass(frozen=True)
class AgentEvent:
    type: str
    data: dict = field(default_factory=dict)


class MalformedMessage(ValueError):
    """An SSE message that cannot be understood; the stream skips it and goes on."""


class NativeTranslator:
    """Checks one native-protocol message (docs/agent-protocol.md) and makes it an event."""

    def translate(self, message: SSEMessage) -> list[AgentEvent]:
        if message.event not in EVENT_TYPES:
            raise MalformedMessage(f"unknown event type {message.event!r}")
        try:
            data = json.loads(message.data)
        except ValueError:
            raise MalformedMessage(f"{message.event} data is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedMessage(f"{message.event} data is not a JSON object")
        required = {"token": "text", "status_update": "status", "done": "status"}.get(message.event)
        if required and not isinstance(data.get(required), str):
            raise MalformedMessage(f"{message.event} has no string {required!r}")
        return [AgentEvent(message.event, data)]
