"""GET /healthz: can the database be read and written, is the event bus up, is the registry
loaded, which agents are up.

Anyone (a load balancer, a probe) gets the overall status and its HTTP code; the details, which
name the fleet's agents, are for logged-in users only.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask_login import current_user

from .database import database_reachable, database_writable
from .fleet import health, registry
from .runs import run_manager

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    database_ok = database_reachable()
    runs = run_manager().health()
    # A database that answers reads but refuses writes (locked, full) loses replies: degraded.
    writable = database_ok and runs["store_ok"] and database_writable()
    try:
        agents = registry().agents
        registry_ok = True
    except Exception:  # a remote registry that never answered
        agents, registry_ok = (), False
    ok = writable and registry_ok and runs["bus_ok"]
    body = {"status": "ok" if ok else "degraded"}
    if current_user.is_authenticated:
        checker = health()
        body.update(
            {
                "database": "ok" if writable else ("read-only" if database_ok else "unreachable"),
                "events": {"bus": runs["bus"], "ok": runs["bus_ok"], "live_runs": runs["live_runs"]},
                "registry": {"loaded": registry_ok, "agents": len(agents)},
                "agents": {agent.agent_id: checker.status(agent) for agent in agents},
            }
        )
    return jsonify(body), 200 if ok else 503
