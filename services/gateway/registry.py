"""The agent registry: which agents exist, where they listen, and which models they offer.

A registry comes from a TOML file (config/agents.toml) or from a registry service that
answers GET {REGISTRY_URL}/agents with the same shape as JSON. Every problem is reported
as a RegistryError whose message is one sentence naming the entry and what is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("switchboard.gateway")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY_PATH = PROJECT_ROOT / "config" / "agents.toml"
PROTOCOLS = ("native", "openai")
# agent_id ends up in URLs, DOM ids and log lines, so keep it to a boring alphabet.
_AGENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The registry service is a known address: proxy variables must not divert the request.
_HTTP = requests.Session()
_HTTP.trust_env = False


class RegistryError(ValueError):
    """The registry is missing or wrong; the message is one sentence naming the entry."""


@dataclass(frozen=True)
class Model:
    model_id: str
    name: str
    context_window: int
    cost_per_1m_input: float
    cost_per_1m_output: float
    # The model's tokenizer by its tiktoken encoding name ("cl100k_base"); None: counts are estimated.
    tokenizer: str | None = None
    vision: bool = False  # takes images as content parts

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return round(
            (prompt_tokens * self.cost_per_1m_input + completion_tokens * self.cost_per_1m_output) / 1_000_000,
            8,
        )


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    parent_role: str
    port: int
    host: str = "127.0.0.1"
    protocol: str = "native"
    api_key_env: str | None = None
    models: tuple[Model, ...] = ()

    def model(self, model_id: str) -> Model | None:
        for model in self.models:
            if model.model_id == model_id:
                return model
        return None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_root(self) -> bool:
        return self.parent_role == ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "name": self.name,
            "parent_role": self.parent_role,
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "api_key_env": self.api_key_env,
            "models": [
                {
                    "model_id": m.model_id,
                    "name": m.name,
                    "context_window": m.context_window,
                    "cost_per_1m_input": m.cost_per_1m_input,
                    "cost_per_1m_output": m.cost_per_1m_output,
                    **({"tokenizer": m.tokenizer} if m.tokenizer else {}),
                    "vision": m.vision,
                }
                for m in self.models
            ],
        }


class Registry:
    """An immutable, validated list of agents in file order."""

    def __init__(self, agents: tuple[Agent, ...], source_name: str = "<memory>"):
        self.agents = agents
        self.source_name = source_name
        self._by_id = {agent.agent_id: agent for agent in agents}

    def __iter__(self):
        return iter(self.agents)

    def __len__(self) -> int:
        return len(self.agents)

    def get(self, agent_id: str) -> Agent | None:
        return self._by_id.get(agent_id)

    def models(self, agent_id: str | None = None) -> list[Model]:
        """One agent's models, or every distinct model id of the fleet (first one wins)."""
        if agent_id is not None:
            agent = self.get(agent_id)
            return list(agent.models) if agent else []
        seen: dict[str, Model] = {}
        for agent in self.agents:
            for model in agent.models:
                seen.setdefault(model.model_id, model)
        return list(seen.values())

    def children(self, agent_id: str) -> tuple[Agent, ...]:
        return tuple(a for a in self.agents if a.parent_role == agent_id)

    def roots(self) -> tuple[Agent, ...]:
        return tuple(a for a in self.agents if a.is_root)

    def to_dict(self) -> dict[str, Any]:
        return {"agents": [agent.to_dict() for agent in self.agents]}

    @classmethod
    def from_dict(cls, data: Any, source_name: str) -> "Registry":
        return cls(_parse_agents(data, source_name), source_name)


# --- validation -------------------------------------------------------------------------


def _parse_agents(data: Any, source: str) -> tuple[Agent, ...]:
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: the registry must be a table with an 'agents' list.")
    raw_agents = data.get("agents", [])
    if not isinstance(raw_agents, list):
        raise RegistryError(f"{source}: 'agents' must be a list of [[agents]] tables.")
    agents: list[Agent] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_agents, start=1):
        agent = _parse_agent(raw, index, source)
        if agent.agent_id in seen:
            raise RegistryError(f"{source}: agent '{agent.agent_id}' is listed more than once.")
        seen.add(agent.agent_id)
        agents.append(agent)
    _check_parents(agents, source)
    return tuple(agents)


def _parse_agent(raw: Any, index: int, source: str) -> Agent:
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: agent #{index} is not a table.")
    agent_id = raw.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id:
        raise RegistryError(f"{source}: agent #{index} has no agent_id.")
    if not _AGENT_ID_PATTERN.match(agent_id):
        raise RegistryError(
            f"{source}: agent #{index} has agent_id {agent_id!r}, which may only use letters, digits, '-', '_' and '.'."
        )
    where = f"{source}: agent '{agent_id}'"
    name = _optional_str(raw, "name", where) or agent_id
    parent_role = _optional_str(raw, "parent_role", where) or ""
    host = _optional_str(raw, "host", where) or "127.0.0.1"
    port = _parse_port(raw.get("port"), where)
    protocol = raw.get("protocol", "native")
    if protocol not in PROTOCOLS:
        raise RegistryError(f"{where} has protocol {protocol!r}, which is not one of 'native' or 'openai'.")
    api_key_env = _optional_str(raw, "api_key_env", where) or None
    models = _parse_models(raw.get("models"), where, f"agent '{agent_id}'", source)
    return Agent(
        agent_id=agent_id,
        name=name,
        parent_role=parent_role,
        host=host,
        port=port,
        protocol=protocol,
        api_key_env=api_key_env,
        models=models,
    )


def _optional_str(raw: dict, key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise RegistryError(f"{where} has {key} {value!r}, which is not a string.")


def _parse_port(value: Any, where: str) -> int:
    if value is None:
        raise RegistryError(f"{where} has no port.")
    # bool is an int in Python, but `port = true` is certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistryError(f"{where} has port {value!r}, which is not a whole number.")
    if not 1 <= value <= 65535:
        raise RegistryError(f"{where} has port {value}, which is not between 1 and 65535.")
    return value


def _parse_models(raw_models: Any, where: str, owner: str, source: str) -> tuple[Model, ...]:
    if not raw_models:
        raise RegistryError(f"{where} lists no models.")
    if not isinstance(raw_models, list):
        raise RegistryError(f"{where} has 'models' that is not a list of [[agents.models]].")
    models: list[Model] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_models, start=1):
        if not isinstance(raw, dict):
            raise RegistryError(f"{where} has model #{index} that is not a table.")
        model_id = raw.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise RegistryError(f"{where} has model #{index} without a model_id.")
        model_where = f"{source}: model '{model_id}' of {owner}"
        if model_id in seen:
            raise RegistryError(f"{where} lists model '{model_id}' more than once.")
        seen.add(model_id)
        context_window = raw.get("context_window")
        if context_window is None:
            raise RegistryError(f"{model_where} has no context_window.")
        if isinstance(context_window, bool) or not isinstance(context_window, int) or context_window < 1:
            raise RegistryError(
                f"{model_where} has context_window {context_window!r}, which is not a positive whole number."
            )
        models.append(
            Model(
                model_id=model_id,
                name=_optional_str(raw, "name", model_where) or model_id,
                context_window=context_window,
                cost_per_1m_input=_parse_price(raw, "cost_per_1m_input", model_where),
                cost_per_1m_output=_parse_price(raw, "cost_per_1m_output", model_where),
                tokenizer=_optional_str(raw, "tokenizer", model_where) or None,
                vision=_parse_flag(raw, "vision", model_where),
            )
        )
    return tuple(models)


def _parse_flag(raw: dict, key: str, where: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise RegistryError(f"{where} has {key} {value!r}, which is not true or false.")
    return value


def _parse_price(raw: dict, key: str, where: str) -> float:
    value = raw.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RegistryError(f"{where} has {key} {value!r}, which is not a price of zero or more.")
    return float(value)


def _check_parents(agents: list[Agent], source: str) -> None:
    by_id = {agent.agent_id: agent for agent in agents}
    for agent in agents:
        if agent.parent_role and agent.parent_role not in by_id:
            raise RegistryError(
                f"{source}: agent '{agent.agent_id}' has parent_role '{agent.parent_role}', "
                "which is not an agent of this registry."
            )
    for agent in agents:
        # Walk up; more steps than agents means we went round a loop.
        current, steps = agent, 0
        while current.parent_role:
            current = by_id[current.parent_role]
            steps += 1
            if steps > len(agents):
                raise RegistryError(f"{source}: agent '{agent.agent_id}' is its own ancestor through parent_role.")


# --- loading ----------------------------------------------------------------------------


def load_registry_file(path: str | os.PathLike) -> Registry:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"Registry file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"Registry file {path} cannot be read ({exc}).") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path} is not valid TOML: {exc}.") from None
    return Registry.from_dict(data, str(path))


class RegistrySource:
    """Hands out the current registry from a file or a registry service, thread-safely.

    A file is re-read when its modification time changes. A service is asked again after
    `ttl` seconds. Either way a broken update keeps the last good registry (and logs why);
    RegistryError is raised only while there has never been a good one.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        url: str | None = None,
        ttl: float = 10.0,
        timeout: tuple[float, float] = (1.0, 2.0),
    ):
        if path is None and url is None:
            path = DEFAULT_REGISTRY_PATH
        self.path = Path(path) if path is not None else None
        self.url = url.rstrip("/") if url else None
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._registry: Registry | None = None
        self._next_check = 0.0
        self._file_stamp: tuple[int, int] | None = None

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "RegistrySource":
        """REGISTRY_URL wins over REGISTRY_PATH; neither means config/agents.toml."""
        environ = os.environ if environ is None else environ
        url = environ.get("REGISTRY_URL") or None
        path = environ.get("REGISTRY_PATH") or None
        return cls(path=None if url else (path or DEFAULT_REGISTRY_PATH), url=url)

    def current(self) -> Registry:
        with self._lock:
            if self._registry is not None and time.monotonic() < self._next_check:
                return self._registry
            try:
                fresh = self._fetch_url() if self.url else self._read_file()
            except RegistryError as exc:
                if self._registry is None:
                    raise
                log.warning("Keeping the last good agent registry: %s", exc)
                fresh = self._registry
            self._registry = fresh
            self._next_check = time.monotonic() + (self.ttl if self.url else 0.5)
            return fresh

    def _read_file(self) -> Registry:
        assert self.path is not None
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if self._registry is not None and stamp is not None and stamp == self._file_stamp:
            return self._registry
        registry = load_registry_file(self.path)
        self._file_stamp = stamp
        return registry

    def _fetch_url(self) -> Registry:
        endpoint = f"{self.url}/agents"
        try:
            response = _HTTP.get(endpoint, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise RegistryError(f"Registry service {endpoint} cannot be reached ({type(exc).__name__}).") from None
        with response:
            if response.status_code != 200:
                raise RegistryError(f"Registry service {endpoint} answered HTTP {response.status_code}.")
            try:
                data = response.json()
            except (ValueError, json.JSONDecodeError):
                raise RegistryError(f"Registry service {endpoint} did not answer JSON.") from None
        return Registry.from_dict(data, endpoint)
