"""The OpenAPI document and the routes are the same set; every route is exercised by a test."""
from __future__ import annotations

import pathlib
import re

from kaccy_bitcoin.adapters.http_api.app import Api
from kaccy_bitcoin.adapters.http_api.metrics import Metrics
from kaccy_bitcoin.adapters.http_api.openapi import document
from kaccy_bitcoin.adapters.http_api.routes import ROUTES

TESTS = pathlib.Path(__file__).parent


def served_routes() -> set[tuple[str, str]]:
    async def no_use_case(name: str) -> None:
        raise AssertionError(name)

    app = Api(no_use_case, lambda secret: None, None, None, Metrics()).app()  # type: ignore[arg-type]
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def documented_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in document(ROUTES)["paths"].items() for method in ops}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    served, documented = served_routes(), documented_routes()
    assert served - documented == set(), "served but not in /openapi.json"
    assert documented - served == set(), "in /openapi.json but not served"
    assert len(served) == len(ROUTES) >= 25


def test_the_document_describes_inputs_and_auth() -> None:
    doc = document(ROUTES)
    create = doc["paths"]["/v1/orders"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["order_id", "amount_sat"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= create["parameters"][0].items()
    assert "201" in create["responses"] and create["security"] == [{"bearer": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []
    show = doc["paths"]["/v1/orders/{order_id}"]["get"]
    assert show["parameters"][0] == {"name": "order_id", "in": "path", "required": True,
                                    "schema": {"type": "string", "minLength": 1}}
    assert {p["name"] for p in doc["paths"]["/v1/events"]["get"]["parameters"]} == {"after", "limit"}


def test_every_route_is_called_by_a_test() -> None:
    sources = "\n".join(p.read_text() for p in TESTS.glob("test_http_*.py") if p.name != pathlib.Path(__file__).name)
    missing = []
    for r in ROUTES:
        # The path with each {param} as "anything": an f-string or a literal id in a test.
        pattern = re.escape(r.path).replace(r"\{", "{").replace(r"\}", "}")
        pattern = re.sub(r"{\w+(?::[^{}]*)?}", r"[^/\"?]+", pattern) + r"[\"?]"   # {name} or {name:regex}
        if not re.search(pattern, sources):
            missing.append(f"{r.method} {r.path}")
    assert not missing, f"routes no test calls: {missing}"
