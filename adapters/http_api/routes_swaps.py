"""The swap routes: `POST /v1/swaps/...` mirrors `kaccy-bitcoin swap ...` (same JSON in and out;
docs/swaps.md). `SWAP_ROUTES` is appended to routes.ROUTES, so the OpenAPI document has them."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.requests import bad, query_text
from kaccy_bitcoin.adapters.http_api.routes import READ, WITHDRAW, Call, Created, Route, _fee_rate, _obj

STATES = ["INITIATED", "LOCKED", "COMPLETED", "REFUNDED", "CANCELLED"]
_HEX66 = {"type": "string", "pattern": "^[0-9a-fA-F]{66}$", "description": "a compressed public key, hex"}
_HEX64 = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
_HEX = {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$", "maxLength": 1000}
_SAT = {"type": "integer", "minimum": 1}
_VOUT = {"type": "integer", "minimum": 0, "maximum": 100_000}
_BLOCKS = {"type": "integer", "minimum": 1, "maximum": 52_560}
_RATE = {"oneOf": [{"type": "number"}, {"type": "string"}], "description": "sat/vB"}
_WALLET = {"type": "string", "minLength": 1, "maxLength": 128}
MAX_SAT = 21_000_000 * 100_000_000


async def _use(call: Call, name: str) -> Any:
    from kaccy_bitcoin.application import swaps

    return getattr(swaps, name)(await call.use("swap_context"))


def _terms(call: Call) -> tuple[str, int, int]:
    b = call.body
    return (b.text("counterparty_pubkey", required=True, min_length=66, max_length=66),  # type: ignore[return-value]
            b.integer("amount_sat", required=True, high=MAX_SAT), b.integer("receive_sat", required=True, high=MAX_SAT))


def _counter(call: Call, required: bool) -> tuple[Any, Any, Any]:
    b = call.body
    return (b.text("counter_txid", required=required, min_length=64, max_length=64),
            b.integer("counter_vout", required=required, low=0, high=100_000),
            b.text("counter_script", required=required, min_length=2, max_length=1000))


async def initiate(call: Call) -> Created:
    key, amount, receive = _terms(call)
    blocks = call.body.integer("timeout_blocks", high=52_560) or 144
    rate = _fee_rate(call.body.number_text("fee_rate"))
    wallet = call.body.text("wallet", min_length=1, max_length=128)
    call.body.done()
    return Created(await (await _use(call, "InitiateSwap"))(key, amount, receive, blocks, rate, wallet))


async def accept(call: Call) -> Created:
    key, amount, receive = _terms(call)
    wallet = call.body.text("wallet", min_length=1, max_length=128)
    call.body.done()
    return Created(await (await _use(call, "AcceptSwap"))(key, amount, receive, wallet))


async def participate(call: Call) -> dict[str, Any]:
    payment_hash = call.body.text("payment_hash", required=True, min_length=64, max_length=64)
    txid, vout, script = _counter(call, True)
    blocks = call.body.integer("timeout_blocks", high=52_560) or 72
    rate = _fee_rate(call.body.number_text("fee_rate"))
    call.body.done()
    use = await _use(call, "ParticipateSwap")
    return await use(call.path("swap_id"), payment_hash, txid, vout, script, blocks, rate)


async def redeem(call: Call) -> dict[str, Any]:
    txid, vout, script = _counter(call, False)
    rate = _fee_rate(call.body.number_text("fee_rate"))
    call.body.done()
    return await (await _use(call, "RedeemSwap"))(call.path("swap_id"), txid, vout, script, rate)


async def refund(call: Call) -> dict[str, Any]:
    rate = _fee_rate(call.body.number_text("fee_rate"))
    call.body.done()
    return await (await _use(call, "RefundSwap"))(call.path("swap_id"), rate)


async def cancel(call: Call) -> dict[str, Any]:
    call.body.done()
    return await (await _use(call, "CancelSwap"))(call.path("swap_id"))


async def show(call: Call) -> dict[str, Any]:
    return await (await _use(call, "ShowSwap"))(call.path("swap_id"))


async def listing(call: Call) -> dict[str, Any]:
    state = query_text(call.query, "state", 20)
    if state is not None and state not in STATES:
        raise bad(f"state must be one of {', '.join(STATES)}, got {state!r}")
    return await (await _use(call, "ListSwaps"))(state)


_COUNTER = {"counter_txid": _HEX64, "counter_vout": _VOUT, "counter_script": _HEX}
SWAP_ROUTES = [
    Route("POST", "/v1/swaps/initiate", initiate, "Initiate a swap: make the secret and lock coins in HTLC1 (the "
          "CLI's `swap initiate`)", "swaps", (WITHDRAW,), "optional", status=201,
          body=_obj(["counterparty_pubkey", "amount_sat", "receive_sat"], counterparty_pubkey=_HEX66,
                    amount_sat=_SAT, receive_sat=_SAT, timeout_blocks=_BLOCKS, fee_rate=_RATE, wallet=_WALLET)),
    Route("POST", "/v1/swaps/accept", accept, "Accept a swap as participant: our fresh key; moves no coins",
          "swaps", (WITHDRAW,), "optional", status=201,
          body=_obj(["counterparty_pubkey", "amount_sat", "receive_sat"], counterparty_pubkey=_HEX66,
                    amount_sat=_SAT, receive_sat=_SAT, wallet=_WALLET)),
    Route("POST", "/v1/swaps/{swap_id}/participate", participate, "Check the initiator's lock, then lock ours "
          "(HTLC2)", "swaps", (WITHDRAW,), "optional",
          body=_obj(["payment_hash", "counter_txid", "counter_vout", "counter_script"], payment_hash=_HEX64,
                    **_COUNTER, timeout_blocks=_BLOCKS, fee_rate=_RATE)),
    Route("POST", "/v1/swaps/{swap_id}/redeem", redeem, "Claim the counterparty's lock with the secret (the "
          "counter_* fields are required of the initiator)", "swaps", (WITHDRAW,), "optional",
          body=_obj([], **_COUNTER, fee_rate=_RATE)),
    Route("POST", "/v1/swaps/{swap_id}/refund", refund, "Take our lock back once the chain reaches its locktime",
          "swaps", (WITHDRAW,), "optional", body=_obj([], fee_rate=_RATE)),
    Route("POST", "/v1/swaps/{swap_id}/cancel", cancel, "Cancel a swap whose lock was never funded", "swaps",
          (WITHDRAW,), "optional", body=_obj([])),
    Route("GET", "/v1/swaps/{swap_id}", show, "A swap (the CLI's `swap show`)", "swaps", (READ, WITHDRAW)),
    Route("GET", "/v1/swaps", listing, "Every swap (the CLI's `swap list`)", "swaps", (READ, WITHDRAW),
          query=(("state", {"type": "string", "enum": STATES}),)),
]
