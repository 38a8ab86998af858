"""Every route of the API, one module per group, each route declared once beside its handler.

A route names its method, path, the scopes that may call it (None: no key), whether an
`Idempotency-Key` is required or optional, and its body and query fields from the table of
adapters/http_api/fields.py: the app checks a request against them before the handler runs, and
the OpenAPI document is made from the same objects. Adding a route is one decorated function in
its group's module (`@route("GET", "/v1/x", ...)`, routes/base.py); a new group is a new module
imported below. Handlers read their checked inputs (`call.body["x"]`, `call.args["y"]`), call one
use case from the container by name, and return its answer; they hold no business rule."""
from __future__ import annotations

from kaccy_bitcoin.adapters.http_api.routes.base import (ADMIN, ORDERS, READ, ROUTES, WITHDRAW, Call, Created,
                                                         Route, route)
# Importing a group registers its routes, in this order (the OpenAPI document's).
from kaccy_bitcoin.adapters.http_api.routes import (  # noqa: E402, F401 - imported for their routes
    orders, events, withdrawals, payjoin_withdrawals, addresses, controls, lightning, channels, webhooks, swaps,
    stats, pegs, nodes, operations, checkout, payjoin)

__all__ = ["ADMIN", "ORDERS", "READ", "ROUTES", "WITHDRAW", "Call", "Created", "Route", "route"]
