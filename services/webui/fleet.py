"""The web app's view of the agent fleet: the registry and cached health, shared per process."""

from __future__ import annotations

from flask import current_app

from services.gateway.health import HealthChecker
from services.gateway.registry import Registry, RegistryError, RegistrySource

from .config import ConfigError


def init_fleet(app) -> None:
    source = RegistrySource(
        path=app.config["AGENTS_FILE"], url=app.config["REGISTRY_URL"], ttl=app.config["REGISTRY_TTL"]
    )
    try:
        source.current()  # a bad file stops start-up here, with the registry's own sentence
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    app.extensions["switchboard.registry"] = source
    app.extensions["switchboard.health"] = HealthChecker()


def registry() -> Registry:
    return current_app.extensions["switchboard.registry"].current()


def health() -> HealthChecker:
    return current_app.extensions["switchboard.health"]
