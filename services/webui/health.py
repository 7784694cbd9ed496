"""GET /healthz: is the database reachable, is the registry loaded, which agents are up.

Anyone (a load balancer, a probe) gets the overall status and its HTTP code; the details, which
name the fleet's agents, are for logged-in users only.
"""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask_login import current_user

from .database import database_reachable
from .fleet import health, registry

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    database_ok = database_reachable()
    try:
        agents = registry().agents
        registry_ok = True
    except Exception:  # a remote registry that never answered
        agents, registry_ok = (), False
    ok = database_ok and registry_ok
    body = {"status": "ok" if ok else "degraded"}
    if current_user.is_authenticated:
        checker = health()
        body.update({
            "database": "ok" if database_ok else "unreachable",
            "registry": {"loaded": registry_ok, "agents": len(agents)},
            "agents": {agent.agent_id: checker.status(agent) for agent in agents},
        })
    return jsonify(body), 200 if ok else 503
