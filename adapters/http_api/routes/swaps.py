"""Atomic swaps: `POST /v1/swaps/...` mirrors `kaccy-bitcoin swap ...` (the same JSON in and out;
docs/swaps.md)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import FEE_RATE, MAX_SAT, WALLET, Choice, Integer, Text
from kaccy_bitcoin.adapters.http_api.routes.base import READ, WITHDRAW, Call, Created, _obj, route
from kaccy_bitcoin.domain.swaps import MIN_SWAP_SAT

STATES = ("INITIATED", "LOCKED", "COMPLETED", "REFUNDED", "CANCELLED")
PUBKEY = Text(min_length=66, max_length=66, pattern=r"^(02|03)[0-9a-fA-F]{64}$", content_code="invalid_swap",
              description="a compressed public key, hex")
HASH = Text(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]{64}$", content_code="invalid_swap",
            description="SHA-256 of the secret, hex")
TXID = Text(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]{64}$", content_code="invalid_swap")
VOUT = Integer(low=0, high=100_000)
SCRIPT = Text(min_length=2, max_length=1000, pattern=r"^([0-9a-fA-F]{2})+$", content_code="invalid_swap",
              description="the counterparty's HTLC witness script, hex")
SAT = Integer(low=MIN_SWAP_SAT, high=MAX_SAT, code="invalid_swap")
COUNTER = {"counter_txid": TXID, "counter_vout": VOUT, "counter_script": SCRIPT}
# A swap id is hex (uuid4): `/v1/swaps/accept` and `/initiate` are never taken for one.
SWAP_ID = {"swap_id": "[0-9a-f]+"}


@route("POST", "/v1/swaps/initiate", "Initiate a swap: make the secret and lock coins in HTLC1 (`swap initiate`)",
       tag="swaps", scopes=(WITHDRAW,), idempotency="optional", status=201,
       body=_obj(["counterparty_pubkey", "amount_sat", "receive_sat"], counterparty_pubkey=PUBKEY, amount_sat=SAT,
                 receive_sat=SAT, timeout_blocks=Integer(high=52_560, default=144), fee_rate=FEE_RATE,
                 wallet=WALLET))
async def initiate_swap(call: Call) -> Created:
    b = call.body
    initiate = await call.use("initiate_swap")
    return Created(await initiate(b["counterparty_pubkey"], b["amount_sat"], b["receive_sat"], b["timeout_blocks"],
                                  b["fee_rate"], b["wallet"]))


@route("POST", "/v1/swaps/accept", "Accept a swap as participant: our fresh key; moves no coins (`swap accept`)",
       tag="swaps", scopes=(WITHDRAW,), idempotency="optional", status=201,
       body=_obj(["counterparty_pubkey", "amount_sat", "receive_sat"], counterparty_pubkey=PUBKEY, amount_sat=SAT,
                 receive_sat=SAT, wallet=WALLET))
async def accept_swap(call: Call) -> Created:
    b = call.body
    accept = await call.use("accept_swap")
    return Created(await accept(b["counterparty_pubkey"], b["amount_sat"], b["receive_sat"], b["wallet"]))


@route("POST", "/v1/swaps/{swap_id}/participate", "Check the initiator's lock, then lock ours (HTLC2)",
       tag="swaps", path_patterns=SWAP_ID, scopes=(WITHDRAW,), idempotency="optional",
       body=_obj(["payment_hash", "counter_txid", "counter_vout", "counter_script"], payment_hash=HASH, **COUNTER,
                 timeout_blocks=Integer(high=52_560, default=72), fee_rate=FEE_RATE))
async def participate_swap(call: Call) -> dict[str, Any]:
    b = call.body
    participate = await call.use("participate_swap")
    return await participate(call.path("swap_id"), b["payment_hash"], b["counter_txid"], b["counter_vout"],
                             b["counter_script"], b["timeout_blocks"], b["fee_rate"])


@route("POST", "/v1/swaps/{swap_id}/redeem", "Claim the counterparty's lock with the secret (the counter_* fields "
       "are required of the initiator)", tag="swaps", path_patterns=SWAP_ID, scopes=(WITHDRAW,),
       idempotency="optional", body=_obj([], **COUNTER, fee_rate=FEE_RATE))
async def redeem_swap(call: Call) -> dict[str, Any]:
    b = call.body
    redeem = await call.use("redeem_swap")
    return await redeem(call.path("swap_id"), b["counter_txid"], b["counter_vout"], b["counter_script"],
                        b["fee_rate"])


@route("POST", "/v1/swaps/{swap_id}/refund", "Take our lock back once the chain reaches its locktime",
       tag="swaps", path_patterns=SWAP_ID, scopes=(WITHDRAW,), idempotency="optional",
       body=_obj([], fee_rate=FEE_RATE))
async def refund_swap(call: Call) -> dict[str, Any]:
    refund = await call.use("refund_swap")
    return await refund(call.path("swap_id"), call.body["fee_rate"])


@route("POST", "/v1/swaps/{swap_id}/cancel", "Cancel a swap whose lock was never funded", tag="swaps",
       path_patterns=SWAP_ID, scopes=(WITHDRAW,), idempotency="optional", body=_obj([]))
async def cancel_swap(call: Call) -> dict[str, Any]:
    cancel = await call.use("cancel_swap")
    return await cancel(call.path("swap_id"))


@route("GET", "/v1/swaps/{swap_id}", "A swap (`swap show`)", tag="swaps", path_patterns=SWAP_ID,
       scopes=(READ, WITHDRAW))
async def show_swap(call: Call) -> dict[str, Any]:
    show = await call.use("show_swap")
    return await show(call.path("swap_id"))


@route("GET", "/v1/swaps", "Every swap, or those in a state (`swap list`)", tag="swaps", scopes=(READ, WITHDRAW),
       query={"state": Choice(values=STATES)})
async def list_swaps(call: Call) -> dict[str, Any]:
    listing = await call.use("list_swaps")
    return await listing(call.args["state"])
