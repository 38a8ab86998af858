"""Voids, replacements and the PSBTs we gave up on, through the CLI on the real regtest node
(issue 17, points 3, 4, 6 and 7): a void stays a void through bumps, a replaced or voided
withdrawal is never sent by us, a void outbids an original our mempool never saw, a cancelled
PSBT that reaches the network anyway is counted and alerted (and its coins are spent first by
the next withdrawal), and a refusal that passes is no dead end."""
from __future__ import annotations

import pytest

from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcError
from tests.payments_harness import Shop
from tests.test_withdrawal_safety_regtest import inputs_of, signed_withdrawal, state
from tests.test_withdrawals_regtest import funded_shop, hot_wallet

pytestmark = pytest.mark.node


def events_of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def minimum_named(message: str) -> int:
    return int(message.split("at least ")[1].split(" sat")[0])


async def create(node, shop: Shop, amount: int, *extra: str) -> dict:  # noqa: ANN001
    dest = await node.call("getnewaddress", wallet="miner")
    return shop.cli("withdraw", "create", "--to", dest, "--amount-sat", str(amount), *extra)[1]


async def test_a_bump_of_a_void_is_a_void_and_the_original_ends_voided_with_its_amount_back(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000))
    shop.cli("limits", "set", "--user", "alice", "--daily-sat", "100000")
    w = await create(node, shop, 80_000, "--user", "alice", "--fee-rate", "2")
    wid = w["withdrawal_id"]
    shop.cli("withdraw", "sign", wid, "--signer", "software")
    shop.cli("withdraw", "broadcast", wid)
    void = shop.cli("withdraw", "void", wid, "--fee-rate", "5")[1]["void"]
    assert void["state"] == "broadcast" and void["kind"] == "void"

    bumped = shop.cli("withdraw", "bump", void["withdrawal_id"], "--fee-rate", "20")[1]
    assert (bumped["kind"], bumped["replaces"]) == ("void", void["withdrawal_id"])
    assert inputs_of(bumped) == inputs_of(w)                         # the same coins ...
    assert [o["change"] for o in bumped["outputs"]] == [True]        # ... back to our change chain
    shop.cli("withdraw", "sign", bumped["withdrawal_id"], "--signer", "software")
    sent = shop.cli("withdraw", "broadcast", bumped["withdrawal_id"])[1]
    mempool = await node.call("getrawmempool")
    assert sent["txid"] in mempool and void["txid"] not in mempool
    # Neither the void it replaced nor the original is ever sent by us again.
    for replaced in (void["withdrawal_id"], wid):
        rc, out = shop.cli("withdraw", "broadcast", replaced, check=False)
        assert rc == 2 and out["error"]["code"] == "withdrawal_replaced", out

    await node.mine(1)
    events = shop.poll()
    assert ("withdrawal_voided", wid) in [(e["kind"], e["subject"]) for e in events]
    assert (state(shop, wid), state(shop, void["withdrawal_id"])) == ("voided", "replaced")
    rc, out = shop.cli("withdraw", "create", "--to", await node.call("getnewaddress", wallet="miner"),
                       "--amount-sat", "100000", "--user", "alice", check=False)
    assert rc == 2 and out["error"]["remaining_sat"] == 20_000      # counted until the void is final
    await node.mine(5)
    shop.poll()
    again = await create(node, shop, 100_000, "--user", "alice")    # voided for good: its amount is back
    assert again["state"] in ("created", "held")


async def test_a_void_of_a_signed_withdrawal_our_mempool_never_saw_outbids_it(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    w, _ = await signed_withdrawal(node, shop, 60_000, "--fee-rate", "20")
    wid = w["withdrawal_id"]
    signed = shop.cli("withdraw", "show", wid)[1]
    rc, out = shop.cli("withdraw", "void", wid, "--fee-rate", "1", check=False)
    assert rc == 2 and out["error"]["code"] == "fee_too_low", out
    incremental = round(float((await node.call("getnetworkinfo"))["incrementalfee"]) * 1e8)   # per kvB
    assert minimum_named(out["error"]["message"]) >= signed["fee_sat"] + incremental * 100 // 1000
    assert out["error"]["minimum_fee_sat"] == minimum_named(out["error"]["message"])   # for scripts too
    assert out["error"]["minimum_fee_rate"].endswith(" sat/vB")
    assert state(shop, wid) == "signed" and not (await node.call("getrawmempool"))

    void = shop.cli("withdraw", "void", wid)[1]["void"]            # the default fee meets BIP125
    entry = await node.call("getmempoolentry", void["txid"])
    assert void["fee_sat"] >= signed["fee_sat"] + -(-incremental * entry["vsize"] // 1000)
    rc, out = shop.cli("withdraw", "broadcast", wid, check=False)  # never sent by us once voided
    assert rc == 2 and out["error"]["code"] == "withdrawal_replaced", out
    assert signed["txid"] not in await node.call("getrawmempool")

    # The original in a mempool first (as if someone else had sent it): mine it in a block of
    # its own, which evicts the void, and take that block back: the original returns to the
    # mempool, and the void must replace it there.
    original = (await node.call("finalizepsbt", signed["psbt"]))["hex"]
    void_hex = await node.call("getrawtransaction", void["txid"])
    block = (await node.call("generateblock", node.miner_address, [original]))["hash"]
    await node.call("invalidateblock", block)
    await node.settle()
    assert (await node.call("getrawmempool")) == [signed["txid"]]
    assert await node.call("sendrawtransaction", void_hex) == void["txid"]
    assert (await node.call("getrawmempool")) == [void["txid"]]
    await node.mine(1)
    events = shop.poll()
    assert ("withdrawal_voided", wid) in [(e["kind"], e["subject"]) for e in events]


async def test_a_cancelled_psbt_sent_elsewhere_counts_again_and_is_alerted(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    hot = await hot_wallet(node, shop)
    shop.cli("limits", "set", "--user", "alice", "--daily-sat", "150000")
    w = await create(node, shop, 100_000, "--user", "alice", "--fee-rate", "20")
    wid = w["withdrawal_id"]
    assert shop.cli("withdraw", "cancel", wid)[1]["state"] == "rejected"
    # The PSBT was handed out: somebody holding the keys signs and sends it anyway.
    processed = await node.call("walletprocesspsbt", w["psbt"], True, "ALL", True, True, wallet=hot)
    txid = await node.call("sendrawtransaction", processed["hex"])
    await node.settle()
    events = shop.poll()
    breached = events_of(events, "limit_breached")
    assert [(e["subject"], e["user"], e["amount_sat"], e["txid"]) for e in breached] == [(wid, "alice", 100_000, txid)]
    assert state(shop, wid) == "broadcast"
    rc, out = shop.cli("withdraw", "create", "--to", await node.call("getnewaddress", wallet="miner"),
                       "--amount-sat", "100000", "--user", "alice", check=False)
    assert rc == 2 and out["error"]["code"] == "limit_exceeded" and out["error"]["remaining_sat"] == 50_000
    assert not events_of(shop.poll(), "limit_breached")             # once


async def test_the_next_withdrawal_spends_the_coins_of_cancelled_ones_first(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(120_000, 1_000_000))
    hot = await hot_wallet(node, shop)
    big = await create(node, shop, 900_000, "--fee-rate", "20")
    small = await create(node, shop, 30_000, "--fee-rate", "20")
    assert [i["amount_sat"] for i in big["inputs"]] == [1_000_000]
    assert [i["amount_sat"] for i in small["inputs"]] == [120_000]
    for w in (big, small):
        shop.cli("withdraw", "cancel", w["withdrawal_id"])
    # Above the long-term fee rate one coin would do (and was what coin selection picked): the
    # coins the cancelled PSBTs spend go first, one of each, so neither can pay late.
    nxt = await create(node, shop, 20_000, "--fee-rate", "20")
    assert inputs_of(nxt) == inputs_of(big) | inputs_of(small)
    shop.cli("withdraw", "sign", nxt["withdrawal_id"], "--signer", "software")
    shop.cli("withdraw", "broadcast", nxt["withdrawal_id"])
    late = await node.call("walletprocesspsbt", small["psbt"], True, "ALL", True, True, wallet=hot)
    with pytest.raises(RpcError):
        await node.call("sendrawtransaction", late["hex"])          # conflicts instead of paying twice


async def rejected_for_its_fee(node, shop: Shop) -> dict:  # noqa: ANN001
    """A signed withdrawal the node refuses for a reason that passes: its fee is made to look like
    zero to the node (prioritisetransaction), below the minimum relay fee."""
    w, _ = await signed_withdrawal(node, shop, 50_000, "--fee-rate", "12")
    shown = shop.cli("withdraw", "show", w["withdrawal_id"])[1]
    await node.call("prioritisetransaction", shown["txid"], 0, -shown["fee_sat"])
    rc, out = shop.cli("withdraw", "broadcast", w["withdrawal_id"], check=False)
    assert rc == 1 and out["error"]["code"] == "rejected_by_node", out
    shown = shop.cli("withdraw", "show", w["withdrawal_id"])[1]
    assert shown["state"] == "rejected" and "min relay fee not met" in shown["reject_reason"]
    return shown


async def test_a_rejection_that_passes_is_sent_again_bumped_or_voided(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000, 200_000))
    first = await rejected_for_its_fee(node, shop)
    second = await rejected_for_its_fee(node, shop)
    third = await rejected_for_its_fee(node, shop)
    try:
        rc, out = shop.cli("withdraw", "broadcast", first["withdrawal_id"], check=False)
        assert rc == 1 and out["error"]["code"] == "rejected_by_node"          # still too low: refused again
        assert state(shop, first["withdrawal_id"]) == "rejected"
        await node.call("prioritisetransaction", first["txid"], 0, first["fee_sat"])   # the condition passes
        sent = shop.cli("withdraw", "broadcast", first["withdrawal_id"])[1]
        assert sent == {"withdrawal_id": first["withdrawal_id"], "txid": first["txid"], "state": "broadcast"}
        assert first["txid"] in await node.call("getrawmempool")

        bumped = shop.cli("withdraw", "bump", second["withdrawal_id"], "--fee-rate", "30")[1]
        assert bumped["replaces"] == second["withdrawal_id"] and inputs_of(second) <= inputs_of(bumped)
        shop.cli("withdraw", "sign", bumped["withdrawal_id"], "--signer", "software")
        replacement = shop.cli("withdraw", "broadcast", bumped["withdrawal_id"])[1]["txid"]
        assert replacement in await node.call("getrawmempool")
        rc, out = shop.cli("withdraw", "broadcast", second["withdrawal_id"], check=False)
        assert rc == 2 and out["error"]["code"] == "withdrawal_replaced"

        void = shop.cli("withdraw", "void", third["withdrawal_id"])[1]["void"]
        assert void["state"] == "broadcast" and void["txid"] in await node.call("getrawmempool")
        assert void["fee_sat"] > third["fee_sat"]     # it outbids the original, wherever that may be
        await node.mine(1)
        events = {(e["kind"], e["subject"]) for e in shop.poll()}
        assert {("withdrawal_confirmed", first["withdrawal_id"]), ("withdrawal_replaced", second["withdrawal_id"]),
                ("withdrawal_voided", third["withdrawal_id"])} <= events
    finally:
        for w in (second, third):
            await node.call("prioritisetransaction", w["txid"], 0, w["fee_sat"])


async def test_a_permanent_rejection_is_not_sent_again(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    hot = await hot_wallet(node, shop)
    w, dest = await signed_withdrawal(node, shop, 60_000, "--fee-rate", "5")
    (coin,) = w["inputs"]            # another holder of the keys spends the coin, and it is mined
    raw = await node.call("createrawtransaction", [{"txid": coin["txid"], "vout": coin["vout"]}],
                          [{dest: f"{(coin['amount_sat'] - 10_000) / 1e8:.8f}"}])
    await node.call("sendrawtransaction", (await node.call("signrawtransactionwithwallet", raw, wallet=hot))["hex"])
    await node.mine(1)
    rc, out = shop.cli("withdraw", "broadcast", w["withdrawal_id"], check=False)
    assert rc == 1 and out["error"]["code"] == "rejected_by_node"
    rc, out = shop.cli("withdraw", "broadcast", w["withdrawal_id"], check=False)
    assert rc == 2 and out["error"]["code"] == "invalid_withdrawal_state" and "void" in out["error"]["message"]
    rc, out = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "30", check=False)
    assert rc == 2 and out["error"]["code"] == "invalid_withdrawal_state"
