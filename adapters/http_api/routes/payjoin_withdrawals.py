"""Withdrawals as BIP78 payjoins: pay a BIP21 URI, with its receiver's inputs when it offers pj=."""
from __future__ import annotations

from kaccy_bitcoin.adapters.http_api.fields import FEE_RATE, MAX_SAT, USER, WALLET, Choice, Integer, Text
from kaccy_bitcoin.adapters.http_api.routes.base import WITHDRAW, Call, Created, _obj, route

BIP21_URI = Text(min_length=9, max_length=2000, pattern=r"^[bB][iI][tT][cC][oO][iI][nN]:", content_code="invalid_uri",
                 description="BIP21 URI with an amount; pj= (and pjos=0) make it a payjoin")
PAYJOIN_SIGNER = Choice(values=("software", "core"), default="software")
MAX_ADDITIONAL_FEE = Integer(low=0, high=MAX_SAT, description="the most our change may give towards the receiver's "
                                                              "input's fee (default: one input of ours at the "
                                                              "original's fee rate)")


@route("POST", "/v1/withdrawals/payjoin", "Pay a BIP21 URI, as a BIP78 payjoin when it offers one (else, or on any "
       "failure, the original transaction is broadcast, with its fallback_reason)", tag="withdrawals",
       scopes=(WITHDRAW,), idempotency="required", status=201, links={"show_withdrawal": "withdrawal_id"},
       body=_obj(["uri"], uri=BIP21_URI, fee_rate=FEE_RATE, signer=PAYJOIN_SIGNER,
                 max_additional_fee_sat=MAX_ADDITIONAL_FEE, wallet=WALLET, user=USER))
async def payjoin_withdrawal(call: Call) -> Created:
    b = call.body
    payjoin = await call.use("payjoin_withdrawal")
    return Created(await payjoin(b["uri"], b["fee_rate"], b["signer"] or "software", b["max_additional_fee_sat"],
                                 wallet=b["wallet"], user=b["user"]))
