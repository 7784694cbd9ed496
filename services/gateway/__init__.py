"""Switchboard's gateway to the agent fleet: registry, SSE, task streams, health.

A plain library (no Flask): the web app, the benchmarks and the tests all use it.
"""

from .client import TaskStream, open_task
from .control import answer_approval, cancel_task
from .events import EVENT_TYPES, FINAL_STATUSES, AgentEvent
from .health import HealthChecker, HealthResult
from .registry import DEFAULT_REGISTRY_PATH, Agent, Model, Registry, RegistryError, RegistrySource, load_registry_file
from .sse import SSEMessage, SSEParser, format_comment, format_sse

__all__ = [
    "Agent",
    "AgentEvent",
    "DEFAULT_REGISTRY_PATH",
    "EVENT_TYPES",
    "FINAL_STATUSES",
    "HealthChecker",
    "HealthResult",
    "Model",
    "Registry",
    "RegistryError",
    "RegistrySource",
    "SSEMessage",
    "SSEParser",
    "TaskStream",
    "answer_approval",
    "cancel_task",
    "format_comment",
    "format_sse",
    "load_registry_file",
    "open_task",
]
