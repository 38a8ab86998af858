"""Withdrawals: create, sign, combine, broadcast, cancel, approve, bump, void, CPFP, show, list."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import (
    BY, FEE_RATE, LISTED_WITHDRAWAL_STATES, PAYOUTS, PSBT, SIGNER, USER, WALLET, Choice)
from kaccy_bitcoin.adapters.http_api.routes.base import ADMIN, READ, WITHDRAW, Call, Created, _obj, operator, route


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
    by = operator(call)
    cancel = await call.use("cancel_withdrawal")
    return await cancel(call.path("withdrawal_id"), by)


@route("POST", "/v1/withdrawals/{withdrawal_id}/approve", "Release a withdrawal the risk review held",
       tag="withdrawals", scopes=(ADMIN,), idempotency="optional", body=_obj([], by=BY))
async def approve_withdrawal(call: Call) -> dict[str, Any]:
    by = operator(call)
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
    by = operator(call)
    void = await call.use("void_withdrawal")
    return Created(await void(call.path("withdrawal_id"), rate, signer, by))


@route("POST", "/v1/withdrawals/{withdrawal_id}/cpfp", "Lift a stuck withdrawal with a child spending its change",
       tag="withdrawals", scopes=(WITHDRAW,), idempotency="required", status=201,
       body=_obj(["fee_rate"], fee_rate=FEE_RATE))
async def cpfp_withdrawal(call: Call) -> Created:
    rate = call.body["fee_rate"]
    cpfp = await call.use("cpfp_withdrawal")
    return Created(await cpfp(call.path("withdrawal_id"), rate))


@route("GET", "/v1/withdrawals", "Withdrawals in a state (e.g. held: waiting for an operator's review), oldest first",
       tag="withdrawals", scopes=(READ, WITHDRAW),
       query={"state": Choice(values=LISTED_WITHDRAWAL_STATES, default="held")})
async def list_withdrawals(call: Call) -> dict[str, Any]:
    state = call.args["state"]
    listing = await call.use("list_withdrawals")
    return await listing(state, signing_material=call.key.sees_signing_material())
