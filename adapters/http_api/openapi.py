"""The OpenAPI 3 document, made from the route table (so it cannot drift from the routes)."""
from __future__ import annotations

import re
from typing import Any, Iterable

from kaccy_bitcoin.adapters.http_api.routes import Route

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}


def _operation(r: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                    for n in re.findall(r"{(\w+)}", r.path)]
    params += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in r.query]
    if r.idempotency:
        params.append({"name": "Idempotency-Key", "in": "header", "required": r.idempotency == "required",
                       "schema": {"type": "string", "maxLength": 200},
                       "description": "the same key and body again replays the first answer; another body: 422"})
    op: dict[str, Any] = {
        "summary": r.summary, "tags": [r.tag], "operationId": r.handler.__name__, "parameters": params,
        "responses": {str(r.status): {"description": "success", "content": {"application/json": {}}},
                      "4XX": {"description": "the request was refused",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                      "5XX": {"description": "something behind the service failed",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    }
    if r.websocket:
        op["description"] = "Upgrade to a WebSocket; each message is one event as JSON text."
        op["responses"]["101"] = {"description": "switching to the WebSocket protocol"}
    if r.body is not None:
        op["requestBody"] = {"required": bool(r.body.get("required")),
                             "content": {"application/json": {"schema": r.body}}}
    op["security"] = [{"bearer": []}] if r.scopes else []
    if r.scopes:
        op["x-scopes"] = list(r.scopes)
    return op


def document(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.0.3",
        "info": {"title": "kaccy-bitcoin", "version": "1",
                 "description": "Bitcoin payments for the Kaccy Protocol. Errors: {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "kaccy-bitcoin apikey create --scope ..."}}},
    }
