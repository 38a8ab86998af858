"""Lightning: paying out (through the controls), payouts, channels."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import MAX_FEE_SAT, PAYMENT_REQUEST, USER
from kaccy_bitcoin.adapters.http_api.routes.base import READ, WITHDRAW, Call, _obj, route


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
