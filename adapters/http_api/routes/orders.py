"""Orders: create, show, list, and an order's Lightning invoice."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import (
    AMOUNT_MSAT, AMOUNT_SAT, LABEL, MAX_SAT, ORDER_ID, Choice, Integer, Text)
from kaccy_bitcoin.adapters.http_api.routes.base import ORDER_STATUSES, ORDERS, READ, Call, Created, _obj, route


@route("POST", "/v1/orders", "Create an order and its deposit address (the same order id again: the same answer)",
       tag="orders", scopes=(ORDERS,), idempotency="optional", status=201,
       links={"show_order": "order_id", "create_order_invoice": "order_id"},
       receipt=lambda body: body["lightning_msat"] is None,   # the use case writes the Idempotency-Key
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
    made = await create(order_id, Satoshis(amount), expires_in=expires_in, label=label, receipt=call.receipt)
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
