"""Every route of the API, declared once beside its handler.

A route names its method, path, the scopes that may call it (None: no key), whether an
`Idempotency-Key` is required or optional, and its body and query fields from the table of
adapters/http_api/fields.py: the app checks a request against them before the handler runs, and
the OpenAPI document is made from the same objects. Adding a route is one decorated function:
`@route("GET", "/v1/x", ...)`. Handlers read their checked inputs (`call.body["x"]`,
`call.args["y"]`), call one use case from the container by name, and return its answer; they
hold no business rule."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import attrs

from kaccy_bitcoin.adapters.http_api.errors import ApiError
from kaccy_bitcoin.adapters.http_api.fields import (
    AMOUNT_MSAT, AMOUNT_SAT, BY, EVENTS_AFTER, EVENTS_LIMIT, FEE_RATE, LABEL, LISTED_WITHDRAWAL_STATES,
    MAX_FEE_SAT, MAX_SAT, ORDER_ID, PAYMENT_REQUEST, PAYOUTS, PSBT, SIGNER, SINCE, USER,
    WALLET, Choice, Field, Fields, Integer, ListOf, Text, obj)
from kaccy_bitcoin.adapters.http_api.requests import Inputs
from kaccy_bitcoin.domain.api_access import WEBHOOK_URL_MAX, WEBHOOK_URL_PATTERN
from kaccy_bitcoin.domain.events import EVENT_KINDS
from kaccy_bitcoin.domain.payment_state import PaymentState

if TYPE_CHECKING:
    from aiohttp import web

    from kaccy_bitcoin.adapters.http_api.app import Api
    from kaccy_bitcoin.domain.api_access import ApiKey

READ, ORDERS, WITHDRAW, ADMIN = "read", "orders", "withdraw", "admin"


@attrs.define
class Call:
    """One request as a handler sees it."""

    request: web.Request
    body: Inputs     # the body's fields, checked
    args: Inputs     # the query's fields, checked
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
    body: Fields | None = None              # the request body's fields (None: no body)
    query: tuple[tuple[str, Field], ...] = ()
    status: int = 200
    websocket: bool = False
    content_type: str = "application/json"  # of the success answer
    answers: tuple[tuple[int, str], ...] = ()   # other statuses answered with the success's body
    links: tuple[tuple[str, str], ...] = ()     # (operationId, path parameter) the answer's same field fills


ROUTES: list[Route] = []
Handler = Callable[[Call], Awaitable[Any]]


def route(method: str, path: str, summary: str, *, tag: str, scopes: tuple[str, ...] | None,
          idempotency: str | None = None, body: Fields | None = None,
          query: dict[str, Field] | None = None, status: int = 200, websocket: bool = False,
          content_type: str = "application/json", answers: dict[int, str] | None = None,
          links: dict[str, str] | None = None) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, handler, summary, tag, scopes, idempotency, body,
                            tuple((query or {}).items()), status, websocket, content_type,
                            tuple((answers or {}).items()), tuple((links or {}).items())))
        return handler
    return register


_obj = obj   # a body: obj(("required", ...), name=FIELD, ...)
ORDER_STATUSES = tuple(s.name.lower() for s in PaymentState)   # as the use case lists them


# -- orders --------------------------------------------------------------------------------
@route("POST", "/v1/orders", "Create an order and its deposit address (the same order id again: the same answer)",
       tag="orders", scopes=(ORDERS,), idempotency="optional", status=201,
       links={"show_order": "order_id", "create_order_invoice": "order_id"},
       body=_obj(["order_id", "amount_sat"], order_id=ORDER_ID, amount_sat=AMOUNT_SAT,
                 expires_in=Integer(high=10 * 365 * 86400), label=LABEL,
                 lightning_msat=Integer(high=MAX_SAT * 1000, description="also a Lightning invoice for this many "
                                        "msat (LND configured, else 409 lightning_unavailable); the answer then "
                                        "carries `lightning`"),
                 lightning_expiry=Integer(high=365 * 86400, description="seconds the invoice can be paid for "
                                                                         "(default 3600)")))
async def create_order(call: Call) -> Created:
    from kaccy_bitcoin.domain.money import Satoshis

    b = call.body
    order_id, amount, expires_in = b["order_id"], b["amount_sat"], b["expires_in"]
    label = b["label"] or ""
    lightning_msat, lightning_expiry = b["lightning_msat"], b["lightning_expiry"]
    # Built first: without LND (409 lightning_unavailable) no order is made either.
    create_invoice = await call.use("create_order_invoice") if lightning_msat is not None else None
    create = await call.use("create_order")
    made = await create(order_id, Satoshis(amount), expires_in=expires_in, label=label)
    if create_invoice is not None:
        invoice = await create_invoice(order_id, lightning_msat, lightning_expiry)
        made = {**made, "lightning": {k: invoice[k] for k in ("payment_request", "payment_hash", "state")}}
    return Created(made)


@route("POST", "/v1/orders/{order_id}/invoice", "A Lightning invoice for the order (the CLI's `ln invoice create`; "
       "the same amount again: the same invoice)", tag="orders", scopes=(ORDERS,), idempotency="optional",
       status=201, body=_obj(["amount_msat"], amount_msat=AMOUNT_MSAT, expiry=Integer(high=365 * 86400)))
async def create_order_invoice(call: Call) -> Created:
    amount, expiry = call.body["amount_msat"], call.body["expiry"]
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
       query={"status": Choice(values=ORDER_STATUSES, code="invalid_order"), "label": LABEL,
              "after": Text(max_length=128, description="an order id: the page starts after it"),
              "limit": Integer(high=500, default=100)})   # the use case's LIST_MAX
async def list_orders(call: Call) -> dict[str, Any]:
    q = call.args
    listing = await call.use("list_orders")
    return await listing(status=q["status"], label=q["label"], after=q["after"], limit=q["limit"])


# -- events --------------------------------------------------------------------------------
@route("GET", "/v1/events", "Committed events after a cursor, oldest first (the outbox)", tag="events",
       scopes=(READ,), query={"after": EVENTS_AFTER, "limit": EVENTS_LIMIT})
async def list_events(call: Call) -> dict[str, Any]:
    page = await call.use("list_events")
    return await page(call.args["after"], call.args["limit"])


@route("GET", "/v1/events/ws", "WebSocket: every event after `after` as one JSON text message, then live",
       tag="events", scopes=(READ,), query={"after": EVENTS_AFTER}, websocket=True)
async def event_stream(call: Call) -> Any:
    return await call.api.stream_events(call.request, call.args["after"])


# -- withdrawals ---------------------------------------------------------------------------
def _payouts(outputs: list[tuple[str, int]] | None) -> list[tuple[str, int]]:
    return list(outputs or ())


@route("POST", "/v1/withdrawals", "Select coins and build an unsigned PSBT", tag="withdrawals", scopes=(WITHDRAW,),
       idempotency="required", status=201,
       links={"show_withdrawal": "withdrawal_id", "sign_withdrawal": "withdrawal_id",
              "cancel_withdrawal": "withdrawal_id"},
       body=_obj(["outputs"], outputs=PAYOUTS, fee_rate=FEE_RATE, user=USER, wallet=WALLET))
async def create_withdrawal(call: Call) -> Created:
    payouts = _payouts(call.body["outputs"])
    rate, user, wallet = call.body["fee_rate"], call.body["user"], call.body["wallet"]
    create = await call.use("create_withdrawal")
    return Created(await create(payouts, rate, user, wallet=wallet))


@route("POST", "/v1/withdrawals/{withdrawal_id}/combine", "Merge signatures made elsewhere (another cosigner)",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="optional",
       body=_obj(["psbt"], psbt=PSBT))
async def combine_withdrawal(call: Call) -> dict[str, Any]:
    combine = await call.use("combine_withdrawal")
    return await combine(call.path("withdrawal_id"), call.body["psbt"])


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
    by = call.body["by"]
    return by or (f"api:{call.key.key_id}" if call.key else "api")


@route("GET", "/v1/withdrawals/{withdrawal_id}", "A withdrawal", tag="withdrawals", scopes=(READ, WITHDRAW))
async def show_withdrawal(call: Call) -> dict[str, Any]:
    show = await call.use("show_withdrawal")
    return await show(call.path("withdrawal_id"), signing_material=call.key.sees_signing_material())


@route("POST", "/v1/withdrawals/{withdrawal_id}/sign", "Add signatures", tag="withdrawals", scopes=(WITHDRAW,),
       idempotency="optional", body=_obj(["signer"], signer=SIGNER))
async def sign_withdrawal(call: Call) -> dict[str, Any]:
    signer = call.body["signer"]
    sign = await call.use("sign_withdrawal")
    return await sign(call.path("withdrawal_id"), signer)


@route("POST", "/v1/withdrawals/{withdrawal_id}/broadcast", "Finalize, check with the mempool, and send",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="optional", body=_obj([]))
async def broadcast_withdrawal(call: Call) -> dict[str, Any]:
    broadcast = await call.use("broadcast_withdrawal")
    return await broadcast(call.path("withdrawal_id"))


@route("POST", "/v1/withdrawals/{withdrawal_id}/cancel", "Withdraw an unsigned withdrawal and release its coins",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="optional", body=_obj([], by=BY))
async def cancel_withdrawal(call: Call) -> dict[str, Any]:
    by = _operator(call)
    cancel = await call.use("cancel_withdrawal")
    return await cancel(call.path("withdrawal_id"), by)


@route("POST", "/v1/withdrawals/{withdrawal_id}/approve", "Release a withdrawal the risk review held",
       tag="withdrawals", scopes=(ADMIN,), idempotency="optional", body=_obj([], by=BY))
async def approve_withdrawal(call: Call) -> dict[str, Any]:
    by = _operator(call)
    approve = await call.use("approve_withdrawal")
    return await approve(call.path("withdrawal_id"), by)


@route("POST", "/v1/withdrawals/{withdrawal_id}/bump", "Replace a broadcast withdrawal with a higher fee (RBF)",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj(["fee_rate"], fee_rate=FEE_RATE, outputs=PAYOUTS))
async def bump_withdrawal(call: Call) -> Created:
    rate, extra = call.body["fee_rate"], _payouts(call.body["outputs"])
    bump = await call.use("bump_withdrawal")
    return Created(await bump(call.path("withdrawal_id"), rate, extra))


@route("POST", "/v1/withdrawals/{withdrawal_id}/void", "Spend a signed withdrawal's inputs back to us, at once",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj([], fee_rate=FEE_RATE, signer=Choice(values=SIGNER.values, default="software"), by=BY))
async def void_withdrawal(call: Call) -> Created:
    rate, signer = call.body["fee_rate"], call.body["signer"]
    by = _operator(call)
    void = await call.use("void_withdrawal")
    return Created(await void(call.path("withdrawal_id"), rate, signer, by))


@route("POST", "/v1/withdrawals/{withdrawal_id}/cpfp", "Lift a stuck withdrawal with a child spending its change",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj(["fee_rate"], fee_rate=FEE_RATE))
async def cpfp_withdrawal(call: Call) -> Created:
    rate = call.body["fee_rate"]
    cpfp = await call.use("cpfp_withdrawal")
    return Created(await cpfp(call.path("withdrawal_id"), rate))


# -- addresses -----------------------------------------------------------------------------
@route("GET", "/v1/addresses", "The address book as BIP329 records, by chain and index, paged",
       tag="addresses", scopes=(READ,),
       query={"offset": Integer(low=0, high=2**31, default=0), "limit": Integer(high=1000, default=100)})
async def list_addresses(call: Call) -> dict[str, Any]:
    listing = await call.use("list_addresses")
    return await listing(offset=call.args["offset"], limit=call.args["limit"])


# -- limits and audit ----------------------------------------------------------------------
_USER_LIMITS = ("daily_sat", "monthly_sat", "single_max_sat", "hourly_sat")
_LIMIT_FIELDS = (*_USER_LIMITS, "platform_daily_sat")


@route("GET", "/v1/limits", "The stored withdrawal limits (a user's and the platform's)", tag="controls",
       scopes=(READ, WITHDRAW), query={"user": USER})
async def show_limits(call: Call) -> dict[str, Any]:
    show = await call.use("show_limits")
    return await show(call.args["user"])


@route("POST", "/v1/limits", "Set a user's limits or the platform's daily limit (fields not given keep their "
       "value)", tag="controls", scopes=(ADMIN,), idempotency="optional",
       body=_obj([], user=USER, by=BY, **{f: AMOUNT_SAT for f in _LIMIT_FIELDS},
                 any_of=(("platform_daily_sat",), *(("user", f) for f in _USER_LIMITS)), rules_code="invalid_amount",
                 needs=tuple((f, "user") for f in _USER_LIMITS)))
async def set_limits(call: Call) -> dict[str, Any]:
    user = call.body["user"]
    values = {f: call.body[f] for f in _LIMIT_FIELDS}
    by = _operator(call)
    set_them = await call.use("set_limits")
    return await set_them(user, by=by, **values)


@route("GET", "/v1/audit/verify", "Check the audit trail's hash chain: {ok, entries, head} or {ok: false, "
       "first_bad, ...}", tag="controls", scopes=(ADMIN,))
async def verify_audit(call: Call) -> dict[str, Any]:
    verify = await call.use("verify_audit")
    return await verify()


@route("GET", "/v1/audit", "Audit entries about a subject and/or since a time, oldest first", tag="controls",
       scopes=(ADMIN,), query={"subject": Text(max_length=200), "since": SINCE,
                              "limit": Integer(high=100_000, default=1000)})
async def query_audit(call: Call) -> dict[str, Any]:
    import datetime as dt

    since_text = call.args["since"]
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
    return await query(call.args["subject"], since, call.args["limit"])


# -- lightning -----------------------------------------------------------------------------
@route("POST", "/v1/lightning/payments", "Pay a BOLT11 payment request and wait for the result",
       tag="lightning", scopes=(WITHDRAW,), idempotency="required",
       body=_obj(["payment_request"], payment_request=PAYMENT_REQUEST, max_fee_sat=MAX_FEE_SAT, user=USER))
async def pay_invoice(call: Call) -> dict[str, Any]:
    request, max_fee, user = call.body["payment_request"], call.body["max_fee_sat"], call.body["user"]
    pay = await call.use("pay_invoice")
    return await pay(request, max_fee, user)


@route("GET", "/v1/lightning/payments/{payment_id}", "A Lightning payment and its state", tag="lightning",
       scopes=(READ, WITHDRAW))
async def show_ln_payment(call: Call) -> dict[str, Any]:
    show = await call.use("show_ln_payment")
    return await show(call.path("payment_id"))


@route("POST", "/v1/lightning/payments/{payment_id}/send", "Pay a Lightning payment an operator approved",
       tag="lightning", scopes=(WITHDRAW,), idempotency="optional", body=_obj([]))
async def send_ln_payment(call: Call) -> dict[str, Any]:
    send = await call.use("send_ln_payment")
    return await send(call.path("payment_id"))


@route("GET", "/v1/lightning/channels", "The Lightning node's channels and balances", tag="lightning",
       scopes=(READ,))
async def list_channels(call: Call) -> dict[str, Any]:
    channels = await call.use("list_channels")
    return await channels()


# -- webhooks ------------------------------------------------------------------------------
@route("POST", "/v1/webhooks", "Subscribe a URL to events (all kinds, or those listed); the secret is shown once",
       tag="webhooks", scopes=(ADMIN,), idempotency="optional", status=201,
       body=_obj(["url"], url=Text(min_length=1, max_length=WEBHOOK_URL_MAX, format="uri",
                                   pattern=WEBHOOK_URL_PATTERN, code="invalid_webhook"),
                 events=ListOf(item=Choice(values=tuple(sorted(EVENT_KINDS)), code="invalid_webhook"),
                               high=len(EVENT_KINDS), code="invalid_webhook",
                               description="event kinds (default: every kind)")))
async def create_webhook(call: Call) -> Created:
    url, events = call.body["url"], call.body["events"]
    register = await call.use("register_webhook")
    return Created(await register(url, events, call.key.key_id if call.key else ""))


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
       body=_obj(["from_seq"], from_seq=Integer(high=EVENTS_AFTER.high)))
async def redeliver_webhook(call: Call) -> dict[str, Any]:
    from_seq = call.body["from_seq"]
    redeliver = await call.use("redeliver_webhook")
    return redeliver(call.path("webhook_id"), from_seq)


# -- operations (no key) -------------------------------------------------------------------
@route("GET", "/v1/withdrawals", "Withdrawals in a state (e.g. held: waiting for an operator's review), oldest first",
       tag="withdrawals", scopes=(READ, WITHDRAW),
       query={"state": Choice(values=LISTED_WITHDRAWAL_STATES, default="held")})
async def list_withdrawals(call: Call) -> dict[str, Any]:
    state = call.args["state"]
    listing = await call.use("list_withdrawals")
    return await listing(state, signing_material=call.key.sees_signing_material())


@route("GET", "/dashboard", "The operator's dashboard (a web page; it asks for an admin key and reads this API "
       "with it)", tag="operations", scopes=None, content_type="text/html")
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


@route("GET", "/ready", "Readiness: node reachable and synced, LND (when configured) synced to the chain, database "
       "writable, monitor not lagging; 503 when a check fails", tag="operations", scopes=None,
       answers={503: "a check failed: the same report, the failing check named"})
async def ready(call: Call) -> Any:
    return await call.api.readiness()


@route("GET", "/metrics", "Prometheus metrics (text format)", tag="operations", scopes=None,
       content_type="text/plain")
async def metrics(call: Call) -> Any:
    return call.api.metrics.response()


@route("GET", "/openapi.json", "This document", tag="operations", scopes=None)
async def openapi(call: Call) -> Any:
    from kaccy_bitcoin.adapters.http_api.openapi import document

    return document(ROUTES)
