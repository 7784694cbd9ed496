"""Write throw-away registries on free loopback ports, for tests and local experiments.

Tests must never use the fixed 611x ports of config/agents.toml: a developer's own fleet
may be running there. `write_test_registry` copies a registry (by default the real one)
and gives every agent a free port.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Iterable

from services.gateway.registry import DEFAULT_REGISTRY_PATH, Registry, load_registry_file

_DEFAULT_MODELS = [
    {
        "model_id": "ref-standard",
        "name": "Reference Standard",
        "context_window": 32768,
        "cost_per_1m_input": 3.0,
        "cost_per_1m_output": 15.0,
    },
    {
        "model_id": "ref-fast",
        "name": "Reference Fast",
        "context_window": 8192,
        "cost_per_1m_input": 0.25,
        "cost_per_1m_output": 1.25,
    },
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes are valid TOML basic-string escapes; ensure_ascii=False avoids
    # \ud83d-style surrogate pairs, which TOML does not accept.
    return json.dumps(str(value), ensure_ascii=False)


def registry_to_toml(data: dict) -> str:
    """TOML text for a registry dict of the shape Registry.to_dict() returns."""
    lines: list[str] = []
    for agent in data.get("agents", []):
        lines.append("[[agents]]")
        for key, value in agent.items():
            if key != "models" and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for model in agent.get("models", []):
            lines.append("")
            lines.append("  [[agents.models]]")
            for key, value in model.items():
                if value is not None:
                    lines.append(f"  {key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_test_registry(
    path: str | os.PathLike, agents: Iterable[dict] | None = None, base: str | os.PathLike = DEFAULT_REGISTRY_PATH
) -> Path:
    """Write a registry TOML to `path` and return it.

    `agents` are dicts in the registry's shape; each may leave out port (a free one is
    chosen), host, protocol, parent_role, name and models (two reference models). Without
    `agents`, the agents of `base` are copied with free ports.
    """
    if agents is None:
        agents = [dict(a, port=None) for a in load_registry_file(base).to_dict()["agents"]]
    completed = []
    for agent in agents:
        entry = {
            "agent_id": agent["agent_id"],
            "name": agent.get("name", agent["agent_id"]),
            "parent_role": agent.get("parent_role", ""),
            "host": agent.get("host", "127.0.0.1"),
            "port": agent.get("port") or free_port(),
            "protocol": agent.get("protocol", "native"),
            "api_key_env": agent.get("api_key_env"),
            "models": agent.get("models") or _DEFAULT_MODELS,
        }
        completed.append(entry)
    data = {"agents": completed}
    Registry.from_dict(data, str(path))  # fail here, not later in a child process
    path = Path(path)
    path.write_text(registry_to_toml(data), encoding="utf-8")
    return path
