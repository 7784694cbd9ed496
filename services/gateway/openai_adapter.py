"""Speak to OpenAI-compatible agents (protocol = "openai") as if they were native ones.

The request is a streaming /v1/chat/completions call that asks for a usage chunk. Each
chunk becomes native events: content deltas are tokens, the usage chunk is usage, and
`data: [DONE]` is done. A finish_reason is not the end: the usage chunk comes after it.
Stopping is closing the upstream connection; there is no cancel endpoint.
"""

from __future__ import annotations

import json
from typing import Any

from .events import AgentEvent, MalformedMessage
from .registry import Agent
from .sse import SSEMessage


def chat_completions_request(agent: Agent, model_id: str, messages: list[dict]) -> tuple[str, dict]:
    body = {
        "model": model_id,
        "messages": [{"role": m["role"], "content": openai_content(m["content"])} for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return f"{agent.base_url}/v1/chat/completions", body


def openai_content(content):
    """Native content → OpenAI's: a string stays a string; parts become text and image_url parts,
    a file's text inlined under a header line that names it."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "file":
            header = f"[attachment: {part['name']} ({part['media_type']})]"
            parts.append({"type": "text", "text": f"{header}\n{part['text']}"})
        elif kind == "image":
            url = f"data:{part['media_type']};base64,{part['data']}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


class OpenAITranslator:
    """Turns one chat.completion.chunk message into zero or more native events."""

    def translate(self, message: SSEMessage) -> list[AgentEvent]:
        if message.data.strip() == "[DONE]":
            return [AgentEvent("done", {"status": "complete"})]
        try:
            chunk = json.loads(message.data)
        except ValueError:
            raise MalformedMessage("a chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise MalformedMessage("a chunk is not a JSON object")
        if message.event == "error" or "error" in chunk:
            return [AgentEvent("done", {"status": "error", "error": _error_text(chunk)})]
        events = [AgentEvent("token", {"text": text}) for text in _content_deltas(chunk)]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            events.append(
                AgentEvent(
                    "usage", {key: usage.get(key) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
                )
            )
        return events


def _content_deltas(chunk: dict[str, Any]) -> list[str]:
    texts = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue  # Switchboard asks for one choice; ignore any others
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            texts.append(content)
    return texts


def _error_text(chunk: dict[str, Any]) -> str:
    error = chunk.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) and error else "the agent reported an error"
