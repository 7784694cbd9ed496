"""Calls that steer a native agent's running task: cancel it, or answer its approval request.

Both are short POSTs that never raise for an agent's faults: they say whether it worked.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import requests

from . import transport
from .registry import Agent

log = logging.getLogger("switchboard.gateway")


def answer_approval(
    agent: Agent, task_id: str, approval_id: str, decision: str, comment: str | None, timeout: float = 3.0
) -> tuple[bool, str | None]:
    """Give a native agent the decision on its approval request: (delivered, why not)."""
    if agent.protocol != "native":
        return False, f"Agent {agent.agent_id} does not take approvals."
    try:
        headers = transport.auth_headers(agent)
        response = transport.SESSION.post(
            f"{agent.base_url}/tasks/{quote(task_id, safe='')}/approvals/{quote(approval_id, safe='')}",
            json={"decision": decision, "comment": comment or ""},
            headers=headers,
            timeout=(min(timeout, 3.0), timeout),
            allow_redirects=False,
        )
    except transport.MissingApiKey as exc:
        return False, str(exc)
    except requests.RequestException as exc:
        log.warning("Could not give agent %s the decision on %s (%s).", agent.agent_id, task_id, type(exc).__name__)
        if transport.is_connect_failure(exc):
            return False, transport.not_answering(agent)
        return False, f"Agent {agent.agent_id} did not confirm it in time."
    with response:
        if response.status_code == 200:
            return True, None
        return False, transport.http_status_sentence(agent, response.status_code, response.content[:4096])


def cancel_task(agent: Agent, task_id: str, timeout: float = 2.0) -> bool:
    """Ask a native agent to stop a task. OpenAI agents stop when the stream is closed."""
    if agent.protocol == "openai":
        return True
    try:
        headers = transport.auth_headers(agent)
        response = transport.SESSION.post(
            f"{agent.base_url}/tasks/{quote(task_id, safe='')}/cancel",
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        )
    except (requests.RequestException, transport.MissingApiKey) as exc:
        log.warning("Could not ask agent %s to cancel task %s (%s).", agent.agent_id, task_id, type(exc).__name__)
        return False
    with response:
        return response.status_code == 200
