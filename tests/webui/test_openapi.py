"""The OpenAPI description is served, valid, and in step with the URL map."""

from __future__ import annotations

import re

import schemathesis

from services.webui.openapi import document

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def json_routes(app) -> set[tuple[str, str]]:
    """(METHOD, /path/{arg}) of every route that answers JSON or an SSE stream of JSON events:
    everything under /api/, and the health check."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/api/") or rule.endpoint == "health.healthz"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def described(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS}


def test_every_json_route_is_described_and_nothing_else(app):
    routes, spec = json_routes(app), described(document())
    assert len(routes) >= 15
    assert routes - spec == set(), "routes without a description"
    assert spec - routes == set(), "described, but no such route"


def test_path_parameters_are_declared_as_in_the_url(app):
    for path, item in document()["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}"


def test_every_operation_describes_its_errors_with_the_error_shape(app, alice):
    spec = document()
    error = alice.get("/api/chat/sessions/nope").json
    assert set(error) == set(spec["components"]["schemas"]["Error"]["properties"])
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert "400" in codes, f"{method.upper()} {path}: every route can refuse bad input"
            assert not {code for code in codes if code.startswith("5")} - {"503"}, "a 500 is never a contract"
            if path.startswith("/api/"):
                assert "401" in codes, f"{method.upper()} {path}: every API route needs a login"


def test_the_description_is_valid_openapi_3_1():
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(described(document()))


def test_it_is_served_to_a_logged_in_user_only(app, client, alice):
    assert client.get("/api/openapi.json").status_code == 401
    response = alice.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    served = response.json
    assert served["openapi"].startswith("3.1") and described(served) == json_routes(app)
    assert served["components"]["securitySchemes"]["session"]["name"] == app.config["SESSION_COOKIE_NAME"]
