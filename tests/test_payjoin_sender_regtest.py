"""`withdraw payjoin` (the CLI, in its own process) against a BIP78 receiver that is not our code
(tests/payjoin_receiver.py: a node wallet behind an aiohttp server on 127.0.0.1): honest, it
gets a payjoin that confirms and is tracked; cheating in each way the sender checks (or failing,
or silent, or absent), it gets the original, broadcast, with the reason."""
from __future__ import annotations

import asyncio

import pytest
from bitcointx import ChainParams
from bitcointx.core.psbt import PartiallySignedTransaction

from tests.payjoin_receiver import REGTEST, Receiver
from tests.payments_harness import Shop
from tests.test_withdrawals_regtest import funded_shop, wallet_caught_up

pytestmark = pytest.mark.node

AMOUNT = 30_000


def uri(address: str, endpoint: str | None, pjos: str | None = None) -> str:
    text = f"bitcoin:{address}?amount={AMOUNT / 1e8:.8f}"
    if endpoint:
        text += f"&pj={endpoint}"
    if pjos is not None:
        text += f"&pjos={pjos}"
    return text


def original_txid(body: str) -> str:
    with ChainParams(REGTEST):
        return PartiallySignedTransaction.from_base64(body).extract_transaction().GetTxid()[::-1].hex()


async def receiver_wallet(node, coins: int = 1) -> str:  # noqa: ANN001
    wallet = await node.fresh_wallet()
    for kind in ("bech32",) * coins + ("p2sh-segwit",):
        await node.send(await node.call("getnewaddress", "", kind, wallet=wallet), 50_000)
    await node.mine(1)
    return wallet


async def test_an_honest_receiver_gets_a_payjoin_that_confirms_and_is_tracked(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(100_000,))
    receiver = Receiver(node, await receiver_wallet(node))
    await receiver.start()
    try:
        pay_to = await node.call("getnewaddress", "", "bech32", wallet=receiver.wallet)
        code, out = await asyncio.to_thread(shop.cli, "withdraw", "payjoin", uri(pay_to, receiver.url),
                                            "--fee-rate", "3", "--user", "alice")
    finally:
        await receiver.stop()
    assert code == 0 and set(out) == {"withdrawal_id", "txid", "state", "payjoin", "fallback_reason"}, out
    assert (out["state"], out["payjoin"], out["fallback_reason"]) == ("broadcast", True, None)
    (request,) = receiver.requests
    query = request["query"]
    assert request["content_type"] == "text/plain"
    assert query["v"] == "1" and "disableoutputsubstitution" not in query
    original = original_txid(request["body"])
    assert out["txid"] != original
    mempool = await node.call("getrawmempool")
    assert out["txid"] in mempool and original not in mempool
    tx = await node.call("getrawtransaction", out["txid"], True)
    assert len(tx["vin"]) == 2                                      # our coin and the receiver's
    shown = shop.cli("withdraw", "show", out["withdrawal_id"])[1]
    change = next(n for n, o in enumerate(shown["outputs"]) if o["change"])
    assert int(query["additionalfeeoutputindex"]) == change
    assert shown["original_txid"] == original and shown["payjoin"] is True and shown["txid"] == out["txid"]
    contribution = shown["payjoin_contribution_sat"]
    assert 0 < contribution <= int(query["maxadditionalfeecontribution"])
    assert float(query["minfeerate"]) >= 3
    await node.mine(1)
    events = shop.poll()
    assert ("withdrawal_confirmed", out["withdrawal_id"]) in [(e["kind"], e["subject"]) for e in events], events
    assert not [e for e in events if e["kind"] in ("unexpected_spend", "payment_to_unknown_address")], events
    received = await node.call("getreceivedbyaddress", pay_to, 1, wallet=receiver.wallet)
    assert round(received * 10**8) > AMOUNT                          # the payment plus the receiver's own coin
    shown = shop.cli("withdraw", "show", out["withdrawal_id"])[1]
    assert (shown["state"], shown["confirmations"]) == ("confirmed", 1)


CHEATS = [
    # (receiver's behaviour, pjos, the fallback reason the sender must give)
    ("reduce_payment", "0", "output_reduced"),
    ("fee_too_high", None, "fee_contribution_too_high"),
    ("input_changed", None, "input_changed"),
    ("sequence", None, "sequence_changed"),
    ("keypath", None, "keypath_added"),
    ("partial_sig", None, "partial_sig_added"),
    ("unfinalized", None, "receiver_input_not_finalized"),
    ("script_type", None, "receiver_input_script_type"),
    ("version", None, "version_changed"),
    ("locktime", None, "locktime_changed"),
    ("drop_output", None, "output_missing"),
    ("error", None, "receiver_error:unavailable"),
    ("timeout", None, "timeout"),
    ("no_pj", None, "no_endpoint"),
]


async def funded_with_coins(node, tmp_path, count: int):  # noqa: ANN001, ANN201
    """A shop with `count` confirmed coins of 100 000 sat (one order, one transaction)."""
    shop = Shop(node, tmp_path)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    address = shop.order("fund", 100_000 * count)["address"]
    for _ in range(count):   # one coin each (a wallet refuses one address twice in one transaction)
        await node.send(address, 100_000)
    await node.mine(1)
    await wallet_caught_up(node, shop.env["KACCY_BITCOIN_RPC_WALLET"])
    shop.poll()
    assert shop.show("fund")["received_sat"] == 100_000 * count
    return shop


async def test_every_cheating_or_failing_receiver_gets_the_original_broadcast(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_with_coins(node, tmp_path, len(CHEATS))
    shop.env["KACCY_PAYJOIN_TIMEOUT"] = "1"
    receiver = Receiver(node, await receiver_wallet(node))
    await receiver.start()
    pay_to = await node.call("getnewaddress", "", "bech32", wallet=receiver.wallet)
    lanes = asyncio.Semaphore(3)   # a few senders at once, each its own process

    async def pay(mode: str, pjos: str | None) -> tuple[int, dict]:
        async with lanes:
            target = uri(pay_to, None if mode == "no_pj" else f"{receiver.url}/{mode}", pjos)
            return await asyncio.to_thread(shop.cli, "withdraw", "payjoin", target, "--fee-rate", "2")

    try:
        results = await asyncio.gather(*(pay(mode, pjos) for mode, pjos, _ in CHEATS))
    finally:
        await receiver.stop()
    mempool = await node.call("getrawmempool")
    offered = {r["mode"]: original_txid(r["body"]) for r in receiver.requests}
    wrong = []
    for (mode, pjos, reason), (code, out) in zip(CHEATS, results):
        got = (code, out.get("state"), out.get("payjoin"), out.get("fallback_reason"))
        if got != (0, "broadcast", False, reason) or out["txid"] not in mempool:
            wrong.append((mode, got, out))
        elif mode != "no_pj" and offered[mode] != out["txid"]:    # the very original it was offered
            wrong.append((mode, "another transaction than the original was sent", out))
    assert not wrong, wrong
    assert all(r["query"].get("disableoutputsubstitution") == ("true" if r["mode"] == "reduce_payment" else None)
               for r in receiver.requests)
    code, out = results[0]
    shown = shop.cli("withdraw", "show", out["withdrawal_id"])[1]
    assert (shown["payjoin"], shown["fallback_reason"], shown["original_txid"], shown["state"]) == (
        False, "output_reduced", out["txid"], "broadcast")


async def test_after_a_payjoin_the_original_may_win_and_bump_and_void_work(node, tmp_path) -> None:  # noqa: ANN001
    """Three payjoins sent, then: (1) the receiver, who holds our signed original, sends it in
    place of the proposal (the node told to count it as paying more) and it is mined: the
    withdrawal follows it, confirmed, no stranger's spend; (2) bumped: the replacement spends our
    coins only and pays what we owed, not the receiver's contribution; (3) voided: our coins back
    to us, outbidding the proposal whose fee includes the receiver's part."""
    shop = await funded_with_coins(node, tmp_path, 3)
    receiver = Receiver(node, await receiver_wallet(node, coins=3))
    await receiver.start()
    try:
        pay_to = await node.call("getnewaddress", "", "bech32", wallet=receiver.wallet)
        sent = [(await asyncio.to_thread(shop.cli, "withdraw", "payjoin", uri(pay_to, receiver.url),
                                         "--fee-rate", "2"))[1] for _ in range(3)]
    finally:
        await receiver.stop()
    assert all(out["payjoin"] is True for out in sent), sent
    first, second, third = sent
    mempool = await node.call("getrawmempool")
    assert all(out["txid"] in mempool for out in sent)   # the receiver added another coin of its own each time

    final = await node.call("finalizepsbt", receiver.requests[0]["body"])
    original = original_txid(receiver.requests[0]["body"])
    await node.call("prioritisetransaction", original, 0, 1_000_000)
    assert await node.call("sendrawtransaction", final["hex"]) == original

    bump = shop.cli("withdraw", "bump", second["withdrawal_id"], "--fee-rate", "10")[1]
    assert [(o["address"], o["amount_sat"]) for o in bump["outputs"] if not o["change"]] == [(pay_to, AMOUNT)]
    shop.cli("withdraw", "sign", bump["withdrawal_id"], "--signer", "software")
    bumped = shop.cli("withdraw", "broadcast", bump["withdrawal_id"])[1]
    voided = shop.cli("withdraw", "void", third["withdrawal_id"], "--fee-rate", "5")[1]
    mempool = await node.call("getrawmempool")
    assert {original, bumped["txid"], voided["void"]["txid"]} <= set(mempool)
    assert not {first["txid"], second["txid"], third["txid"]} & set(mempool)

    await node.mine(1)
    events = shop.poll()
    assert not [e for e in events if e["kind"] in ("unexpected_spend", "withdrawal_conflicted")], events
    shown = shop.cli("withdraw", "show", first["withdrawal_id"])[1]
    assert (shown["txid"], shown["state"], shown["payjoin"], shown["fallback_reason"]) == (
        original, "confirmed", False, "original_sent_by_receiver")
    assert [o["amount_sat"] for o in shown["outputs"] if not o["change"]] == [AMOUNT]
    states = {w: shop.cli("withdraw", "show", w)[1]["state"]
              for w in (second["withdrawal_id"], bump["withdrawal_id"], third["withdrawal_id"])}
    assert states == {second["withdrawal_id"]: "replaced", bump["withdrawal_id"]: "confirmed",
                      third["withdrawal_id"]: "voided"}, states
