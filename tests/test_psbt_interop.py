"""PSBT interop with Bitcoin Core, both directions."""
from __future__ import annotations

import pytest

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.psbt import InvalidPsbt, finalize_psbt, psbt_status

pytestmark = pytest.mark.node


async def test_we_finalize_a_psbt_core_built_and_signed(node) -> None:
    payer = await node.fresh_wallet(funded_sat=400_000)
    dest = await node.call("getnewaddress", wallet="miner")
    funded = await node.call("walletcreatefundedpsbt", [], [{dest: "0.001"}], 0, {"fee_rate": 2}, wallet=payer)
    status = psbt_status(Network.REGTEST, funded["psbt"])
    assert status.inputs_signed == 0 and not status.complete and status.fee is not None
    with pytest.raises(InvalidPsbt, match="still need signatures"):
        finalize_psbt(Network.REGTEST, funded["psbt"])
    signed = await node.call("walletprocesspsbt", funded["psbt"], True, "ALL", True, False, wallet=payer)
    # Core reports complete=false whenever it was told not to finalize; our status reads the signatures.
    assert psbt_status(Network.REGTEST, signed["psbt"]).complete
    psbt, raw, txid = finalize_psbt(Network.REGTEST, signed["psbt"])
    assert (await node.call("finalizepsbt", psbt))["complete"]
    assert await node.call("sendrawtransaction", raw.hex()) == txid.value


def test_garbage_is_refused() -> None:
    for bad in ("", "not base64!", "cHNidP8=", "aGVsbG8="):
        with pytest.raises(InvalidPsbt):
            psbt_status(Network.REGTEST, bad)
