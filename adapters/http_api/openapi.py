"""The OpenAPI 3 document, made from the route table and its fields (adapters/http_api/fields.py),
the same objects the app checks requests with: it cannot drift from the routes or their checks.

Each operation lists every status it can answer: its success, what the app's own checks refuse
(400 a field, 401/403 the key, 413 the body's size, 429 the rate, 409/422 the idempotency key),
what its use case may refuse (400, 404, 409, 422) and what may fail behind it (502, 503, 500)."""
from __future__ import annotations

import re
from typing import Any, Iterable

from kaccy_bitcoin.adapters.http_api.fields import IDEMPOTENCY_KEY
from kaccy_bitcoin.adapters.http_api.routes import Route

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "description": "some codes carry more fields (limit_exceeded: limit, limit_sat, remaining_sat; "
                   "fee_too_low from BIP125: minimum_fee_sat, minimum_fee_rate; fee_too_high: max_fee_sat, "
                   "max_fee_msat)"}}}

# Why each error status is answered (the codes are the command line's; docs/service.md lists them).
ERROR_STATUSES = {
    400: "a field is missing, unknown or breaks its constraint (`invalid_request`, `invalid_json`, "
         "`idempotency_key_required`, `invalid_idempotency_key`, `invalid_event_request`), or the domain refuses "
         "the content (`invalid_address`, `invalid_amount`, `invalid_psbt`, ...)",
    401: "no API key, or not a valid one (`unauthorized`)",
    403: "the key lacks the route's scope (`forbidden`)",
    404: "no such order, withdrawal, webhook, ... (`not_found`)",
    409: "the state does not allow it now (`order_conflict`, `invalid_withdrawal_state`, `withdrawal_held`, "
         "`coins_reserved`, `idempotency_in_progress`, ...), or this deployment is not set up for it "
         "(`lightning_unavailable`: no LND; `config_error`: the message names the setting)",
    413: "the body is larger than KACCY_API_MAX_BODY (`request_too_large`)",
    422: "well formed, refused by the state of funds, limits or fees (`insufficient_funds`, `limit_exceeded`, "
         "`fee_too_low`), a wallet this deployment does not have (`unknown_wallet`), or an Idempotency-Key "
         "used with another request (`idempotency_key_reused`)",
    429: "over the key's rate limit (`rate_limited`; see Retry-After)",
    500: "a bug (`internal`, logged with its traceback)",
    502: "the node, LND or a signer failed (`node_unreachable`, `rpc_error`, `lnd_error`, ...)",
    503: "the database is unavailable (`database_unavailable`)",
}
_USE_CASE_STATUSES = {400, 404, 409, 422, 502, 503}
_WEBSOCKET_HEADERS = (("Upgrade", {"type": "string", "enum": ["websocket"]}),
                      ("Connection", {"type": "string", "enum": ["Upgrade"]}),
                      ("Sec-WebSocket-Version", {"type": "string", "enum": ["13"]}),
                      ("Sec-WebSocket-Key", {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"}))


def _error_statuses(r: Route, has_path_params: bool) -> set[int]:
    out = {500}
    if r.scopes is not None:   # a key, then a use case
        out |= {401, 403, 429} | _USE_CASE_STATUSES
    if r.body is not None:
        out |= {400, 413}
    if r.query or has_path_params:
        out.add(400)
    if has_path_params:
        out.add(404)           # nothing at that path (an unknown id or token)
    if r.idempotency:
        out |= {400, 409, 422}
    if r.websocket:
        out.add(400)           # not a WebSocket handshake
    return out


def _success_schema(content_type: str) -> dict[str, Any]:
    return {"type": "object"} if content_type == "application/json" else {"type": "string"}


def _responses(r: Route, has_path_params: bool) -> dict[str, Any]:
    ok = {"description": "success", "content": {r.content_type: {"schema": _success_schema(r.content_type)}}}
    out: dict[str, Any] = {}
    if r.websocket:
        out["101"] = {"description": "switching to the WebSocket protocol"}
    else:
        out[str(r.status)] = ok
    if r.idempotency:
        out[str(r.status)]["headers"] = {"Idempotent-Replayed": {
            "description": "`true` when this is the first answer to this Idempotency-Key, replayed",
            "schema": {"type": "string", "enum": ["true"]}}}
    if r.errors:   # a protocol of its own: its statuses and its error body
        for status, description in r.errors:
            out[str(status)] = {"description": description,
                                "content": {"application/json": {"schema": r.error_schema or {"type": "object"}}}}
    for status in sorted(_error_statuses(r, has_path_params)) if not r.errors else ():
        out[str(status)] = {"description": ERROR_STATUSES[status],
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if r.links:
        out[str(r.status)]["links"] = {op: {"operationId": op, "parameters": {name: f"$response.body#/{name}"}}
                                       for op, name in r.links}
    for status, description in r.answers:
        out[str(status)] = {**ok, "description": description}
    return out


_PATH_PARAM = r"{(\w+)(?::([^{}]+))?}"


def _operation(r: Route) -> dict[str, Any]:
    names = re.findall(r"{(\w+)}", r.path)
    patterns = dict(r.path_patterns)
    params: list[dict[str, Any]] = [{"name": n, "in": "path", "required": True,
                                     "schema": {"type": "string", "minLength": 1,
                                                **({"pattern": f"^{patterns[n]}$"} if n in patterns else {})}}
                                    for n in names]
    params += [{"name": n, "in": "query", "required": False, "schema": f.schema()} for n, f in r.query]
    if r.idempotency:
        params.append({"name": "Idempotency-Key", "in": "header", "required": r.idempotency == "required",
                       "schema": IDEMPOTENCY_KEY.schema(), "description": IDEMPOTENCY_KEY.description})
    if r.websocket:
        params += [{"name": n, "in": "header", "required": True, "schema": s} for n, s in _WEBSOCKET_HEADERS]
    op: dict[str, Any] = {
        "summary": r.summary, "tags": [r.tag], "operationId": r.handler.__name__, "parameters": params,
        "responses": _responses(r, bool(names)),
    }
    if r.websocket:
        op["description"] = ("Upgrade to a WebSocket; each message is one event as JSON text. A browser, which "
                             "cannot set Authorization here, offers the subprotocols `kaccy.v1` and `bearer.KEY`.")
    if r.body is not None:
        op["requestBody"] = {"required": bool(r.body.required or r.body.any_of),
                             "content": {"application/json": {"schema": r.body.schema()}}}
    if r.text_body is not None:
        op["requestBody"] = {"required": True, "content": {"text/plain": {"schema": r.text_body.schema()}}}
    op["security"] = [{"bearer": []}] if r.scopes else []
    if r.scopes:
        op["x-scopes"] = list(r.scopes)
    return op


def document(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(re.sub(_PATH_PARAM, r"{\1}", r.path), {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.0.3",
        "info": {"title": "kaccy-bitcoin", "version": "1",
                 "description": "Bitcoin payments for the Kaccy Protocol. Errors: "
                                "{\"error\": {\"code\", \"message\"}}. A method a path does not list: 405 with Allow."},
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "kaccy-bitcoin apikey create --scope ..."}}},
    }
