"""The request that starts a task on an agent, in the agent's protocol, and the translator that
reads the agent's answer as native events: POST /tasks for a native agent, a streaming
/v1/chat/completions call for an OpenAI-compatible one (openai_adapter.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import transport
from .events import NativeTranslator
from .openai_adapter import OpenAITranslator, chat_completions_request
from .registry import Agent


@dataclass(frozen=True)
class TaskRequest:
    url: str
    body: dict
    headers: dict[str, str] = field(repr=False)  # the agent's key, when it has one: never logged
    translator: NativeTranslator | OpenAITranslator  # one per request: it may keep state


def task_request(agent: Agent, *, task_id: str, session_id: str, model_id: str, messages: list[dict]) -> TaskRequest:
    """Raises transport.MissingApiKey when the agent's key is not in the environment."""
    # Connection: close, so a task's connection never goes back to the pool: no other request
    # can be on the socket that TaskStream.close() shuts, and no POST can be sent on a
    # keep-alive connection the agent is just closing.
    headers = {
        "Accept": "text/event-stream",
        "Accept-Encoding": "identity",
        "Connection": "close",
        **transport.auth_headers(agent),
    }
    if agent.protocol == "openai":
        url, body = chat_completions_request(agent, model_id, messages)
        return TaskRequest(url, body, headers, OpenAITranslator())
    body = {"task_id": task_id, "session_id": session_id, "model": model_id, "messages": messages}
    return TaskRequest(f"{agent.base_url}/tasks", body, headers, NativeTranslator())
