"""The HTTP API: a driving adapter (aiohttp) over the application's use cases.

`routes.py` declares every route once (method, path, scope, idempotency, the OpenAPI text of
its inputs) beside its handler; `app.py` turns the table into an aiohttp application with the
cross-cutting parts (correlation ids, errors, authentication, rate limits, idempotency keys,
metrics), and `openapi.py` turns the same table into `/openapi.json`."""
