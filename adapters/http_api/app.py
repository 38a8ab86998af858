"""The aiohttp application: the route table plus what every request goes through.

In order: a correlation id (the caller's `X-Request-Id`, else a new one) set for everything
the request causes, RPC calls included, and echoed back; the route's key and scope check
(401 without a valid key, 403 without the scope); the per-key rate limit (429); the body
(at most `max_body_bytes`, a JSON object); the `Idempotency-Key` claim for routes that take
one; the handler; errors as `{"error": {"code", "message"}}`; metrics and one access log line."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import attrs
from aiohttp import web

from kaccy_bitcoin.adapters.http_api.errors import ApiError, error_body, status_of
from kaccy_bitcoin.adapters.http_api.metrics import Metrics
from kaccy_bitcoin.adapters.http_api.fields import IDEMPOTENCY_KEY
from kaccy_bitcoin.adapters.http_api.requests import read_body, read_query
from kaccy_bitcoin.adapters.http_api.routes import ROUTES, Call, Created, Route
from kaccy_bitcoin.adapters.http_api.routes.payjoin import OPEN_ORIGIN_PREFIXES
from kaccy_bitcoin.adapters.observability import correlation_id
from kaccy_bitcoin.domain.api_access import ApiKey
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.service_store import IdempotencyKeyTaken, IdempotencyRecord, ServiceStore

log = logging.getLogger("kaccy_bitcoin.http")
# The WebSocket subprotocol the event stream speaks, and the prefix of the one carrying a key.
WS_PROTOCOL = "kaccy.v1"
WS_BEARER = "bearer."
_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


@attrs.frozen
class ApiSettings:
    max_body_bytes: int = 64 * 1024
    rate_per_second: float = 100.0   # per API key; 0: no limit
    rate_burst: int = 200


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait_needed(self, key: str) -> float:
        """0 when the request may go now (and it is counted), else the seconds until it could."""
        if self._rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self._burst), now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self._rate
        self._buckets[key] = (tokens - 1, now)
        return 0.0


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status, headers=headers,
                        content_type="application/json")


def _error_response(exc: BaseException) -> web.Response:
    headers = dict(exc.headers) if isinstance(exc, ApiError) else {}
    return _json(error_body(exc), status_of(exc), headers)


class Api:
    """The HTTP face of one service process. `use_cases(name)` builds a use case of the
    container (bootstrap wires it); `authenticate(secret)` finds an API key."""

    def __init__(self, use_cases: Callable[[str], Awaitable[Any]], authenticate: Callable[[str], ApiKey | None],
                 store: ServiceStore, clock: Clock, metrics: Metrics, settings: ApiSettings | None = None) -> None:
        self.use_cases = use_cases
        self._authenticate = authenticate
        self._store = store
        self._clock = clock
        self.metrics = metrics
        self.settings = settings or ApiSettings()
        self._limiter = RateLimiter(self.settings.rate_per_second, self.settings.rate_burst)
        self._sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._observe])
        for r in ROUTES:
            app.router.add_route(r.method, r.router_path, self._endpoint(r), name=r.handler.__name__)
        app.on_shutdown.append(self._close_sockets)
        return app

    # -- every request -------------------------------------------------------------------
    @web.middleware
    async def _observe(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        given = request.headers.get("X-Request-Id", "")
        cid = given if 0 < len(given) <= 64 and given.isascii() and given.isprintable() else uuid.uuid4().hex
        token = correlation_id.set(cid)
        started = time.perf_counter()
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:   # aiohttp's own: no route, wrong method, body too large
                code = _HTTP_CODES.get(exc.status, "invalid_request")
                allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None   # 405: RFC 9110
                response = _json({"error": {"code": code, "message": exc.reason if exc.status != 413 else
                                            f"the body is larger than {self.settings.max_body_bytes} bytes"}},
                                 exc.status, allow)
            except Exception as exc:  # noqa: BLE001 - the boundary: one JSON error, logged with the traceback
                response = _error_response(exc)
                if response.status >= 500:
                    log.error("request failed", exc_info=exc, extra={"path": request.path})
            seconds = time.perf_counter() - started
            route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
            self.metrics.http_requests.labels(route, str(response.status)).inc()
            self.metrics.http_latency.labels(route).observe(seconds)
            if not response.prepared:
                response.headers["X-Request-Id"] = cid
                if request.path.startswith(OPEN_ORIGIN_PREFIXES):   # BIP78: every answer, errors included
                    response.headers["Access-Control-Allow-Origin"] = "*"
            log.info("%s %s %s", request.method, request.path, response.status,
                     extra={"method": request.method, "path": request.path, "status": response.status,
                            "duration_ms": round(seconds * 1000, 2)})
            return response
        finally:
            correlation_id.reset(token)

    def _endpoint(self, r: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            key = self._check_key(request, r) if r.scopes is not None else None
            if r.idempotency and key is not None:
                self._idempotency_key(r, request)   # before the body: a bad key is the first thing said
            body = read_body(await self._body(request), r.body) if r.body is not None else read_body({}, None)
            call = Call(request, body, read_query(request.query, dict(r.query)), key, self)
            if r.idempotency and key is not None:
                return await self._idempotent(r, call, key)
            return self._respond(r, await r.handler(call))
        return handle

    def _check_key(self, request: web.Request, r: Route) -> ApiKey:
        header = request.headers.get("Authorization", "")
        if not header and r.websocket:
            # A browser cannot set headers on a WebSocket: it offers the key as a subprotocol,
            # `new WebSocket(url, ["kaccy.v1", "bearer." + key])` (never in the URL, which is logged).
            offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            token = next((p[len(WS_BEARER):] for p in offered if p.startswith(WS_BEARER)), "")
            header = f"Bearer {token}" if token else ""
        scheme, _, secret = header.partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <API key>", challenge)
        key = self._authenticate(secret.strip())
        if key is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", challenge)
        if not any(key.allows(s) for s in r.scopes or ()):
            raise ApiError(403, "forbidden", f"this key lacks the scope {' or '.join(r.scopes or ())} "
                                             f"(it has {', '.join(key.scopes)})")
        wait = self._limiter.wait_needed(key.key_id)
        if wait:
            self.metrics.rate_limited.inc()
            raise ApiError(429, "rate_limited", f"too many requests for this key; retry in {wait:.2f}s",
                           {"Retry-After": str(max(1, round(wait + 0.5)))})
        return key

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        return data

    @staticmethod
    def _respond(r: Route, result: Any) -> web.StreamResponse:
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Created):
            return _json(result.body, 201)
        return _json(result, r.status if r.status != 201 else 200)

    # -- idempotency keys ----------------------------------------------------------------
    @staticmethod
    def _idempotency_key(r: Route, request: web.Request) -> str | None:
        idem = request.headers.get("Idempotency-Key")
        if idem is None:
            if r.idempotency == "required":
                raise ApiError(400, "idempotency_key_required", f"{r.method} {r.path} needs an Idempotency-Key header")
            return None
        return IDEMPOTENCY_KEY.parse_text("Idempotency-Key", idem)

    async def _idempotent(self, r: Route, call: Call, key: ApiKey) -> web.StreamResponse:
        idem = self._idempotency_key(r, call.request)
        if idem is None:
            return self._respond(r, await r.handler(call))
        fingerprint = hashlib.sha256(json.dumps([call.request.method, call.request.path, call.body.raw_data],
                                                sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        if r.receipt is not None and r.receipt(call.body):
            call.receipt = self._store.receipt(key.key_id, idem, fingerprint, self._clock.now(), r.status)
        if call.receipt is not None:
            # The use case claims the key in its first unit of work and answers in its last: no
            # transaction of their own. Shielded, as below.
            return await asyncio.shield(asyncio.ensure_future(self._run_with_receipt(r, call, key, idem,
                                                                                     fingerprint)))
        return await self._claim_then_run(r, call, key, idem, fingerprint)

    async def _claim_then_run(self, r: Route, call: Call, key: ApiKey, idem: str,
                              fingerprint: str) -> web.StreamResponse:
        # The store's writes may wait for the database's write lock: never on the event loop.
        first = await self._store.run_writing(self._store.claim_idempotency, key.key_id, idem, fingerprint,
                                              self._clock.now())
        if first is not None:
            return self._replay(first, fingerprint)
        # Shielded: a client that hangs up does not stop a use case half-way between its commit
        # and the record of its answer (a retry with the same key then replays that answer).
        return await asyncio.shield(asyncio.ensure_future(self._run_and_record(r, call, key, idem)))

    @staticmethod
    def _replay(first: IdempotencyRecord, fingerprint: str) -> web.Response:
        """The answer to a request whose key has a record already."""
        if first.request_hash != fingerprint:
            raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with another request "
                                                           "(another path or body); use a new key")
        if first.status is None:
            raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still "
                                                            "running; retry later")
        return _json(first.response, first.status, {"Idempotent-Replayed": "true"})

    async def _run_and_record(self, r: Route, call: Call, key: ApiKey, idem: str) -> web.StreamResponse:
        try:
            response = self._respond(r, await r.handler(call))
        except BaseException as exc:
            await self._record_failure(key, idem, exc)
            raise
        assert isinstance(response, web.Response) and response.text is not None
        await self._store.run_writing(self._store.finish_idempotency, key.key_id, idem, response.status,
                                      json.loads(response.text))
        return response

    async def _record_failure(self, key: ApiKey, idem: str, exc: BaseException) -> None:
        status = status_of(exc) if isinstance(exc, Exception) else 500
        if status < 500 and status not in (409, 429):   # a final answer about this request: replayed
            await self._store.run_writing(self._store.finish_idempotency, key.key_id, idem, status, error_body(exc))
        else:   # may succeed if tried again: the key is free again
            await self._store.run_writing(self._store.release_idempotency, key.key_id, idem)

    async def _run_with_receipt(self, r: Route, call: Call, key: ApiKey, idem: str,
                                fingerprint: str) -> web.StreamResponse:
        receipt = call.receipt
        assert receipt is not None
        try:
            response = self._respond(r, await r.handler(call))
        except IdempotencyKeyTaken:   # nothing was written: answer from the key's record, as always
            call.receipt = None
            return await self._claim_then_run(r, call, key, idem, fingerprint)
        except BaseException as exc:
            if not receipt.claimed:
                # Failed before its claim committed (nothing was written): as if it had claimed
                # first, the key's record answers if it has one, else this error is recorded.
                first = await self._store.run_writing(self._store.claim_idempotency, key.key_id, idem,
                                                      fingerprint, self._clock.now())
                if first is not None:
                    return self._replay(first, fingerprint)
            await self._record_failure(key, idem, exc)
            raise
        assert isinstance(response, web.Response) and response.text is not None
        if not receipt.answered:   # not final at the use case's last commit: recorded now
            if not receipt.claimed:   # a use case that did not take the receipt: claimed late
                log.warning("%s %s: the use case did not claim its Idempotency-Key", r.method, r.path)
                first = await self._store.run_writing(self._store.claim_idempotency, key.key_id, idem,
                                                      fingerprint, self._clock.now())
                if first is not None:
                    return response
            await self._store.run_writing(self._store.finish_idempotency, key.key_id, idem, response.status,
                                          json.loads(response.text))
        return response

    # -- readiness and the event stream ---------------------------------------------------
    async def readiness(self) -> web.Response:
        check = await self.use_cases("check_readiness")
        report = await check()
        lag = report["checks"].get("monitor", {}).get("lag_blocks")
        if lag is not None:
            self.metrics.monitor_lag.set(lag)
        return _json(report, 200 if report["status"] == "ok" else 503)

    async def observe_nodes(self) -> None:
        """The Bitcoin nodes' gauges for /metrics, checked now; left as they were when the check
        cannot run (the node down with one node, or no node configured)."""
        try:
            show = await self.use_cases("show_nodes")
            report = await show()
        except Exception:  # noqa: BLE001 - metrics answer without them
            log.debug("could not check the Bitcoin nodes for /metrics", exc_info=True)
            return
        self.metrics.observe_nodes(report["nodes"])

    async def stream_events(self, request: web.Request, after: int) -> web.WebSocketResponse:
        feed = await self.use_cases("event_feed")
        return await self.stream(request, (stored.to_dict() async for stored in feed.events(after)))

    async def stream(self, request: web.Request, messages: AsyncIterator[dict[str, Any]]) -> web.WebSocketResponse:
        """A WebSocket sending each of `messages` as one JSON text frame until the client leaves
        (or the server shuts down)."""
        ws = web.WebSocketResponse(heartbeat=30, protocols=(WS_PROTOCOL,))
        await ws.prepare(request)
        self._sockets.add(ws)

        async def pump() -> None:
            async for message in messages:
                await ws.send_str(json.dumps(message, separators=(",", ":")))

        async def drain() -> None:
            async for _ in ws:   # the client says nothing we need; this ends when it closes
                pass

        tasks = {asyncio.ensure_future(pump()), asyncio.ensure_future(drain())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("event stream failed", exc_info=task.exception())
                    await ws.close(code=1011, message=b"event stream failed")
        finally:
            for task in tasks:
                task.cancel()
            self._sockets.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
