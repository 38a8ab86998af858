"""Every route of the API, declared once beside its handler.

A route names its method, path, the scopes that may call it (None: no key), whether an
`Idempotency-Key` is required or optional, and the JSON schema of its body and query for the
OpenAPI document. Adding a route is one decorated function: `@route("GET", "/v1/x", ...)`.
Handlers read and check their inputs, call one use case from the container by name, and return
its answer; they hold no business rule."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import attrs

from kaccy_bitcoin.adapters.http_api.errors import ApiError
from kaccy_bitcoin.adapters.http_api.requests import Body, query_int, query_text

if TYPE_CHECKING:
    from aiohttp import web

    from kaccy_bitcoin.adapters.http_api.app import Api
    from kaccy_bitcoin.domain.api_access import ApiKey

READ, ORDERS, WITHDRAW, ADMIN = "read", "orders", "withdraw", "admin"
SIGNERS = ("software", "hwi", "core")


@attrs.define
class Call:
    """One request as a handler sees it."""

    request: web.Request
    body: Body
    key: ApiKey | None
    api: Api

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def query(self) -> Any:
        return self.request.query

    async def use(self, name: str) -> Any:
        """The container's use case `name` (see bootstrap/container.py Services)."""
        return await self.api.use_cases(name)


@attrs.frozen
class Created:
    """A handler's answer that made something: 201."""

    body: dict[str, Any]


@attrs.frozen
class Route:
    method: str
    path: str
    handler: Callable[[Call], Awaitable[Any]]
    summary: str
    tag: str
    scopes: tuple[str, ...] | None
    idempotency: str | None = None          # "required", "optional" or None
    body: dict[str, Any] | None = None      # JSON schema of the request body
    query: tuple[tuple[str, dict[str, Any]], ...] = ()
    status: int = 200
    websocket: bool = False


ROUTES: list[Route] = []


def route(method: str, path: str, summary: str, *, tag: str, scopes: tuple[str, ...] | None,
          idempotency: str | None = None, body: dict[str, Any] | None = None,
          query: dict[str, dict[str, Any]] | None = None, status: int = 200,
          websocket: bool = False) -> Callable[[Callable[[Call], Awaitable[Any]]], Callable[[Call], Awaitable[Any]]]:
    def register(handler: Callable[[Call], Awaitable[Any]]) -> Callable[[Call], Awaitable[Any]]:
        ROUTES.append(Route(method, path, handler, summary, tag, scopes, idempotency, body,
                            tuple((query or {}).items()), status, websocket))
        return handler
    return register


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 1}
_SEQ = {"type": "integer", "minimum": 0}
_RATE = {"oneOf": [{"type": "number"}, {"type": "string"}], "description": "sat/vB"}
_PAYOUTS = {"type": "array", "items": _obj(["address", "amount_sat"], address=_STR, amount_sat=_INT)}
_SIGNER = {"type": "string", "enum": list(SIGNERS)}


# -- orders --------------------------------------------------------------------------------
@route("POST", "/v1/orders", "Create an order and its deposit address (the same order id again: the same answer)",
       tag="orders", scopes=(ORDERS,), idempotency="optional", status=201,
       body=_obj(["order_id", "amount_sat"], order_id={"type": "string", "minLength": 1, "maxLength": 128},
                 amount_sat=_INT, expires_in=_INT, label={"type": "string", "maxLength": 500},
                 lightning_msat={**_INT, "description": "also a Lightning invoice for this many msat (LND "
                                                           "configured); the answer then carries `lightning`"},
                 lightning_expiry={**_INT, "description": "seconds the invoice can be paid for (default 3600)"}))
async def create_order(call: Call) -> Created:
    from kaccy_bitcoin.domain.money import Satoshis

    b = call.body
    order_id = b.text("order_id", required=True, min_length=1, max_length=128)
    amount = b.integer("amount_sat", required=True, high=21_000_000 * 100_000_000)
    expires_in = b.integer("expires_in", high=10 * 365 * 86400)
    label = b.text("label", max_length=500) or ""
    lightning_msat = b.integer("lightning_msat", high=21_000_000 * 100_000_000 * 1000)
    lightning_expiry = b.integer("lightning_expiry", high=365 * 86400)
    b.done()
    create = await call.use("create_order")
    made = await create(order_id, Satoshis(amount), expires_in=expires_in, label=label)
    if lightning_msat is not None:
        invoice = await (await call.use("create_order_invoice"))(order_id, lightning_msat, lightning_expiry)
        made = {**made, "lightning": {k: invoice[k] for k in ("payment_request", "payment_hash", "state")}}
    return Created(made)


@route("POST", "/v1/orders/{order_id}/invoice", "A Lightning invoice for the order (the CLI's `ln invoice create`; "
       "the same amount again: the same invoice)", tag="orders", scopes=(ORDERS,), idempotency="optional",
       status=201, body=_obj(["amount_msat"], amount_msat=_INT, expiry=_INT))
async def create_order_invoice(call: Call) -> Created:
    amount = call.body.integer("amount_msat", required=True, high=21_000_000 * 100_000_000 * 1000)
    expiry = call.body.integer("expiry", high=365 * 86400)
    call.body.done()
    create = await call.use("create_order_invoice")
    return Created(await create(call.path("order_id"), amount, expiry))


@route("GET", "/v1/orders/{order_id}/invoice", "The order's Lightning invoice and its state (the CLI's "
       "`ln invoice show`)", tag="orders", scopes=(READ, ORDERS))
async def show_order_invoice(call: Call) -> dict[str, Any]:
    show = await call.use("show_order_invoice")
    return await show(call.path("order_id"))


@route("GET", "/v1/orders/{order_id}", "An order's payment status", tag="orders", scopes=(READ, ORDERS))
async def show_order(call: Call) -> dict[str, Any]:
    show = await call.use("show_order")
    return (await show(call.path("order_id"))).to_dict()


@route("GET", "/v1/orders", "Orders by order id, filtered and paged (pass `next` back as `after`)",
       tag="orders", scopes=(READ, ORDERS),
       query={"status": {"type": "string", "enum": ["pending", "unconfirmed", "confirmed", "full_confirmed",
                                                     "finalized", "failed"]},
              "label": _STR, "after": _STR, "limit": {"type": "integer", "minimum": 1, "maximum": 500}})
async def list_orders(call: Call) -> dict[str, Any]:
    q = call.query
    listing = await call.use("list_orders")
    return await listing(status=query_text(q, "status", 20), label=query_text(q, "label", 500),
                         after=query_text(q, "after", 128), limit=query_int(q, "limit", 100, 1, 500))


# -- events --------------------------------------------------------------------------------
def _event_page_bounds(call: Call) -> tuple[int, int]:
    """Whole numbers; their bounds are the use case's to check (the CLI's codes and messages)."""
    return (query_int(call.query, "after", 0, 0, 2**63 - 1, "invalid_event_request"),
            query_int(call.query, "limit", 100, 0, 2**63 - 1, "invalid_event_request"))


@route("GET", "/v1/events", "Committed events after a cursor, oldest first (the outbox)", tag="events",
       scopes=(READ,), query={"after": _SEQ, "limit": {"type": "integer", "minimum": 1, "maximum": 1000}})
async def list_events(call: Call) -> dict[str, Any]:
    after, limit = _event_page_bounds(call)
    page = await call.use("list_events")
    return await page(after, limit)


@route("GET", "/v1/events/ws", "WebSocket: every event after `after` as one JSON text message, then live",
       tag="events", scopes=(READ,), query={"after": _SEQ}, websocket=True)
async def event_stream(call: Call) -> Any:
    after, _ = _event_page_bounds(call)
    return await call.api.stream_events(call.request, after)


# -- withdrawals ---------------------------------------------------------------------------
def _fee_rate(text: str | None) -> Any:
    from kaccy_bitcoin.domain.money import FeeRate

    return None if text is None else FeeRate.from_sat_per_vb(text)


@route("POST", "/v1/withdrawals", "Select coins and build an unsigned PSBT", tag="withdrawals", scopes=(WITHDRAW,),
       idempotency="required", status=201,
       body=_obj(["outputs"], outputs=_PAYOUTS, fee_rate=_RATE,
                 user={"type": "string", "description": "whose withdrawal: their limits and risk review"},
                 wallet={"type": "string", "description": "the wallet to pay from (default: routed by tier)"}))
async def create_withdrawal(call: Call) -> Created:
    payouts = call.body.payouts("outputs")
    rate = _fee_rate(call.body.number_text("fee_rate"))
    user = call.body.text("user", min_length=1, max_length=128)
    wallet = call.body.text("wallet", min_length=1, max_length=128)
    call.body.done()
    create = await call.use("create_withdrawal")
    return Created(await create(payouts, rate, user, wallet=wallet))


@route("POST", "/v1/withdrawals/{withdrawal_id}/combine", "Merge signatures made elsewhere (another cosigner)",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="optional",
       body=_obj(["psbt"], psbt={"type": "string", "description": "base64 PSBT"}))
async def combine_withdrawal(call: Call) -> dict[str, Any]:
    psbt = call.body.text("psbt", required=True, min_length=1, max_length=1_000_000)
    call.body.done()
    combine = await call.use("combine_withdrawal")
    return await combine(call.path("withdrawal_id"), psbt)


@route("GET", "/v1/wallets", "Every wallet, its policy and balance", tag="wallets", scopes=(READ, WITHDRAW))
async def list_wallets(call: Call) -> dict[str, Any]:
    listing = await call.use("list_wallets")
    return await listing()


@route("GET", "/v1/custody", "Each custody tier's balance against its target share", tag="wallets",
       scopes=(READ, WITHDRAW))
async def custody_status(call: Call) -> dict[str, Any]:
    status = await call.use("custody_status")
    return await status()


def _operator(call: Call) -> str:
    """Who acts, for the audit trail: the body's `by`, else the API key."""
    by = call.body.text("by", min_length=1, max_length=128)
    return by or (f"api:{call.key.key_id}" if call.key else "api")


@route("GET", "/v1/withdrawals/{withdrawal_id}", "A withdrawal", tag="withdrawals", scopes=(READ, WITHDRAW))
async def show_withdrawal(call: Call) -> dict[str, Any]:
    show = await call.use("show_withdrawal")
    return await show(call.path("withdrawal_id"))


@route("POST", "/v1/withdrawals/{withdrawal_id}/sign", "Add signatures", tag="withdrawals", scopes=(WITHDRAW,),
       idempotency="optional", body=_obj(["signer"], signer=_SIGNER))
async def sign_withdrawal(call: Call) -> dict[str, Any]:
    signer = call.body.choice("signer", SIGNERS)
    if signer is None:
        raise ApiError(400, "invalid_request", "signer is required")
    call.body.done()
    sign = await call.use("sign_withdrawal")
    return await sign(call.path("withdrawal_id"), signer)


@route("POST", "/v1/withdrawals/{withdrawal_id}/broadcast", "Finalize, check with the mempool, and send",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="optional", body=_obj([]))
async def broadcast_withdrawal(call: Call) -> dict[str, Any]:
    call.body.done()
    broadcast = await call.use("broadcast_withdrawal")
    return await broadcast(call.path("withdrawal_id"))


@route("POST", "/v1/withdrawals/{withdrawal_id}/cancel", "Withdraw an unsigned withdrawal and release its coins",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="optional", body=_obj([], by=_STR))
async def cancel_withdrawal(call: Call) -> dict[str, Any]:
    by = _operator(call)
    call.body.done()
    cancel = await call.use("cancel_withdrawal")
    return await cancel(call.path("withdrawal_id"), by)


@route("POST", "/v1/withdrawals/{withdrawal_id}/approve", "Release a withdrawal the risk review held",
       tag="withdrawals", scopes=(ADMIN,), idempotency="optional", body=_obj([], by=_STR))
async def approve_withdrawal(call: Call) -> dict[str, Any]:
    by = _operator(call)
    call.body.done()
    approve = await call.use("approve_withdrawal")
    return await approve(call.path("withdrawal_id"), by)


@route("POST", "/v1/withdrawals/{withdrawal_id}/bump", "Replace a broadcast withdrawal with a higher fee (RBF)",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj(["fee_rate"], fee_rate=_RATE, outputs=_PAYOUTS))
async def bump_withdrawal(call: Call) -> Created:
    rate = _fee_rate(call.body.number_text("fee_rate", required=True))
    extra = call.body.payouts("outputs", required=False)
    call.body.done()
    bump = await call.use("bump_withdrawal")
    return Created(await bump(call.path("withdrawal_id"), rate, extra))


@route("POST", "/v1/withdrawals/{withdrawal_id}/void", "Spend a signed withdrawal's inputs back to us, at once",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj([], fee_rate=_RATE, signer=_SIGNER, by=_STR))
async def void_withdrawal(call: Call) -> Created:
    rate = _fee_rate(call.body.number_text("fee_rate"))
    signer = call.body.choice("signer", SIGNERS, default="software")
    by = _operator(call)
    call.body.done()
    void = await call.use("void_withdrawal")
    return Created(await void(call.path("withdrawal_id"), rate, signer, by))


@route("POST", "/v1/withdrawals/{withdrawal_id}/cpfp", "Lift a stuck withdrawal with a child spending its change",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj(["fee_rate"], fee_rate=_RATE))
async def cpfp_withdrawal(call: Call) -> Created:
    rate = _fee_rate(call.body.number_text("fee_rate", required=True))
    call.body.done()
    cpfp = await call.use("cpfp_withdrawal")
    return Created(await cpfp(call.path("withdrawal_id"), rate))


# -- addresses -----------------------------------------------------------------------------
@route("GET", "/v1/addresses", "The address book as BIP329 records, by chain and index, paged",
       tag="addresses", scopes=(READ,),
       query={"offset": _SEQ, "limit": {"type": "integer", "minimum": 1, "maximum": 1000}})
async def list_addresses(call: Call) -> dict[str, Any]:
    listing = await call.use("list_addresses")
    return await listing(offset=query_int(call.query, "offset", 0, 0, 2**31),
                         limit=query_int(call.query, "limit", 100, 1, 1000))


# -- limits and audit ----------------------------------------------------------------------
_LIMIT_FIELDS = ("daily_sat", "monthly_sat", "single_max_sat", "hourly_sat", "platform_daily_sat")


@route("GET", "/v1/limits", "The stored withdrawal limits (a user's and the platform's)", tag="controls",
       scopes=(READ, WITHDRAW), query={"user": _STR})
async def show_limits(call: Call) -> dict[str, Any]:
    show = await call.use("show_limits")
    return await show(query_text(call.query, "user", 128))


@route("POST", "/v1/limits", "Set a user's limits or the platform's daily limit (fields not given keep their "
       "value)", tag="controls", scopes=(ADMIN,), idempotency="optional",
       body=_obj([], user=_STR, by=_STR, **{f: _INT for f in _LIMIT_FIELDS}))
async def set_limits(call: Call) -> dict[str, Any]:
    user = call.body.text("user", min_length=1, max_length=128)
    values = {f: call.body.integer(f) for f in _LIMIT_FIELDS}
    by = _operator(call)
    call.body.done()
    set_them = await call.use("set_limits")
    return await set_them(user, by=by, **values)


@route("GET", "/v1/audit/verify", "Check the audit trail's hash chain: {ok, entries, head} or {ok: false, "
       "first_bad, ...}", tag="controls", scopes=(ADMIN,))
async def verify_audit(call: Call) -> dict[str, Any]:
    verify = await call.use("verify_audit")
    return await verify()


@route("GET", "/v1/audit", "Audit entries about a subject and/or since a time, oldest first", tag="controls",
       scopes=(ADMIN,), query={"subject": _STR, "since": {"type": "string", "description": "ISO 8601 or Unix seconds"},
                              "limit": {"type": "integer", "minimum": 1, "maximum": 100000}})
async def query_audit(call: Call) -> dict[str, Any]:
    import datetime as dt

    since_text = query_text(call.query, "since", 40)
    since = None
    if since_text is not None:
        try:
            since = (dt.datetime.fromtimestamp(int(since_text), dt.timezone.utc) if since_text.isdigit()
                     else dt.datetime.fromisoformat(since_text))
        except (ValueError, OverflowError, OSError):
            raise ApiError(400, "invalid_request", f"since must be an ISO 8601 time or Unix seconds, "
                                                   f"got {since_text!r:.60}") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
    query = await call.use("query_audit")
    return await query(query_text(call.query, "subject", 200), since,
                       query_int(call.query, "limit", 1000, 1, 100_000))


# -- lightning -----------------------------------------------------------------------------
@route("POST", "/v1/lightning/payments", "Pay a BOLT11 payment request and wait for the result",
       tag="lightning", scopes=(WITHDRAW,), idempotency="required",
       body=_obj(["payment_request"], payment_request={"type": "string", "maxLength": 4000}, max_fee_sat=_INT))
async def pay_invoice(call: Call) -> dict[str, Any]:
    request = call.body.text("payment_request", required=True, min_length=1, max_length=4000)
    max_fee = call.body.integer("max_fee_sat", high=10**9)
    call.body.done()
    pay = await call.use("pay_invoice")
    return await pay(request, max_fee)


@route("GET", "/v1/lightning/channels", "The Lightning node's channels and balances", tag="lightning",
       scopes=(READ,))
async def list_channels(call: Call) -> dict[str, Any]:
    channels = await call.use("list_channels")
    return await channels()


# -- webhooks ------------------------------------------------------------------------------
@route("POST", "/v1/webhooks", "Subscribe a URL to events (all kinds, or those listed); the secret is shown once",
       tag="webhooks", scopes=(ADMIN,), idempotency="optional", status=201,
       body=_obj(["url"], url=_STR, events={"type": "array", "items": _STR}))
async def create_webhook(call: Call) -> Created:
    url = call.body.raw("url", required=True)
    events = call.body.raw("events")
    call.body.done()
    register = await call.use("register_webhook")
    return Created(register(url, events, call.key.key_id if call.key else ""))


@route("GET", "/v1/webhooks", "Every active webhook and its delivery state", tag="webhooks", scopes=(ADMIN,))
async def list_webhooks(call: Call) -> dict[str, Any]:
    return (await call.use("show_webhooks")).all()


@route("GET", "/v1/webhooks/{webhook_id}", "A webhook's delivery state", tag="webhooks", scopes=(ADMIN,))
async def show_webhook(call: Call) -> dict[str, Any]:
    return (await call.use("show_webhooks")).one(call.path("webhook_id"))


@route("DELETE", "/v1/webhooks/{webhook_id}", "Stop delivering to a webhook", tag="webhooks", scopes=(ADMIN,))
async def delete_webhook(call: Call) -> dict[str, Any]:
    return (await call.use("show_webhooks")).delete(call.path("webhook_id"))


@route("POST", "/v1/webhooks/{webhook_id}/redeliver",
       "Send again every event from `from_seq` on (same delivery ids), now", tag="webhooks", scopes=(ADMIN,),
       body=_obj(["from_seq"], from_seq=_INT))
async def redeliver_webhook(call: Call) -> dict[str, Any]:
    from_seq = call.body.integer("from_seq", required=True)
    call.body.done()
    redeliver = await call.use("redeliver_webhook")
    return redeliver(call.path("webhook_id"), from_seq)


# -- operations (no key) -------------------------------------------------------------------
_LISTED_STATES = ("created", "held", "partially_signed", "signed", "finalized", "broadcast", "confirmed")


@route("GET", "/v1/withdrawals", "Withdrawals in a state (e.g. held: waiting for an operator's review), oldest first",
       tag="withdrawals", scopes=(READ, WITHDRAW),
       query={"state": {"type": "string", "enum": list(_LISTED_STATES)}})
async def list_withdrawals(call: Call) -> dict[str, Any]:
    state = query_text(call.query, "state", 20) or "held"
    if state not in _LISTED_STATES:
        raise ApiError(400, "invalid_request", f"state must be one of {', '.join(_LISTED_STATES)}, got {state!r}")
    listing = await call.use("list_withdrawals")
    return await listing(state)


@route("GET", "/dashboard", "The operator's dashboard (a web page; it asks for an admin key and reads this API "
       "with it)", tag="operations", scopes=None)
async def dashboard(call: Call) -> Any:
    from importlib import resources

    from aiohttp import web

    page = resources.files("kaccy_bitcoin.adapters.http_api").joinpath("dashboard.html").read_text("utf-8")
    return web.Response(text=page, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                 "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                 "connect-src 'self' ws: wss:"})


@route("GET", "/health", "Liveness: the process answers", tag="operations", scopes=None)
async def health(call: Call) -> dict[str, Any]:
    return {"status": "ok"}


@route("GET", "/ready", "Readiness: node reachable and synced, LND (when configured), database writable, "
       "monitor not lagging; 503 when a check fails", tag="operations", scopes=None)
async def ready(call: Call) -> Any:
    return await call.api.readiness()


@route("GET", "/metrics", "Prometheus metrics (text format)", tag="operations", scopes=None)
async def metrics(call: Call) -> Any:
    return call.api.metrics.response()


@route("GET", "/openapi.json", "This document", tag="operations", scopes=None)
async def openapi(call: Call) -> Any:
    from kaccy_bitcoin.adapters.http_api.openapi import document

    return document(ROUTES)


from kaccy_bitcoin.adapters.http_api.routes_swaps import SWAP_ROUTES  # noqa: E402 - needs this module's names

ROUTES.extend(SWAP_ROUTES)
