"""The routes outside the chat: health, this description, who is logged in, the agents and models."""

from __future__ import annotations

from ..models import USER_ROLES
from .helpers import errors, nullable, obj, ok, query, ref


def schemas() -> dict:
    count = {"type": "integer", "minimum": 0}
    return {
        "Agent": obj(
            {
                "agent_id": {"type": "string"},
                "name": {"type": "string"},
                "parent_role": {"type": "string"},
                "protocol": {"enum": ["native", "openai"]},
                "models": {"type": "array", "items": {"type": "string"}},
                "status": {"enum": ["up", "down"]},
                "reason": nullable({"type": "string"}),
            }
        ),
        "Model": obj(
            {
                "agent_id": {"type": "string"},
                "model_id": {"type": "string"},
                "name": {"type": "string"},
                "context_window": count,
                "cost_per_1m_input": {"type": "number", "minimum": 0},
                "cost_per_1m_output": {"type": "number", "minimum": 0},
                "vision": {"type": "boolean", "description": "Takes images as attachments."},
            }
        ),
        "Health": obj(
            {
                "status": {"enum": ["ok", "degraded"]},
                "database": {"enum": ["ok", "unreachable"]},
                "registry": obj({"loaded": {"type": "boolean"}, "agents": count}),
                "agents": {"type": "object", "additionalProperties": {"enum": ["up", "down"]}},
            }
        ),
        "Me": obj(
            {
                "username": {"type": "string"},
                "role": {"enum": list(USER_ROLES)},
                "csrf_token": {"type": "string", "description": "Send it as X-CSRFToken on every write."},
            }
        ),
    }


def paths() -> dict:
    return {
        "/healthz": {
            "get": {
                "summary": "Is the database reachable, is the registry loaded, which agents are up (public).",
                "security": [],
                "responses": {
                    "200": ok("Everything needed is up.", ref("Health")),
                    "503": ok("The database or the registry is not.", ref("Health")),
                    **errors(400),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This description.",
                "responses": {"200": ok("OpenAPI 3.1.", {"type": "object"}), **errors(400, 401)},
            }
        },
        "/api/me": {
            "get": {
                "summary": "Who is logged in, and the CSRF token for writes.",
                "responses": {"200": ok("The user.", ref("Me")), **errors(400, 401)},
            }
        },
        "/api/agents": {
            "get": {
                "summary": "The agents of the registry with their health.",
                "responses": {
                    "200": ok("Agents.", obj({"agents": {"type": "array", "items": ref("Agent")}})),
                    **errors(400, 401),
                },
            }
        },
        "/api/models": {
            "get": {
                "summary": "The models of every agent, or of one.",
                "parameters": [query("agent_id", "Only this agent's models.")],
                "responses": {
                    "200": ok("Models.", obj({"models": {"type": "array", "items": ref("Model")}})),
                    **errors(400, 401, 404),
                },
            }
        },
    }
