"""Fixtures for the gateway tests: a reference-agent fleet on free loopback ports."""

from __future__ import annotations

import uuid

import pytest

from services.agents.fleet import Fleet, write_test_registry
from services.gateway.registry import load_registry_file

TEST_AGENTS = [
    {"agent_id": "ref-root", "name": "Test Root"},
    {"agent_id": "ref-child", "name": "Test Child", "parent_role": "ref-root"},
]


@pytest.fixture(scope="session")
def test_registry_path(tmp_path_factory):
    return write_test_registry(tmp_path_factory.mktemp("registry") / "agents.toml", TEST_AGENTS)


@pytest.fixture(scope="session")
def reference_fleet(test_registry_path, tmp_path_factory):
    """Real reference-agent processes, started once for the whole gateway suite."""
    with Fleet(test_registry_path, log_dir=tmp_path_factory.mktemp("agent-logs")) as fleet:
        yield fleet


@pytest.fixture(scope="session")
def registry(reference_fleet, test_registry_path):
    return load_registry_file(test_registry_path)


@pytest.fixture
def agent(registry):
    return registry.get("ref-child")


@pytest.fixture
def task_id():
    return f"t-{uuid.uuid4().hex[:12]}"
