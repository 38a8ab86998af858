"""A signed transaction may be on the network: its coins are never free again until the chain
says so. Through the CLI on the real regtest node (issue 04, part 2)."""
from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import time

import pytest

from tests.payments_harness import CLI, Shop
from tests.test_withdrawals_regtest import funded_shop, held, hot_wallet

pytestmark = pytest.mark.node


def inputs_of(w: dict) -> set[tuple[str, int]]:
    return {(i["txid"], i["vout"]) for i in w["inputs"]}


async def provided(value):  # noqa: ANN001, ANN201
    return await value if inspect.isawaitable(value) else value


async def shutdown(container) -> None:  # noqa: ANN001
    done = container.shutdown_resources()
    if inspect.isawaitable(done):
        await done


def state(shop: Shop, withdrawal_id: str) -> str:
    return shop.cli("withdraw", "show", withdrawal_id)[1]["state"]


async def signed_withdrawal(node, shop: Shop, amount: int = 60_000, *rate: str) -> tuple[dict, str]:  # noqa: ANN001
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", str(amount), *rate)[1]
    assert shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")[1]["state"] == "signed"
    return w, dest


async def test_signed_and_finalized_cannot_be_cancelled_and_void_takes_the_coins_back(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    w, _ = await signed_withdrawal(node, shop)
    wid = w["withdrawal_id"]
    rc, out = shop.cli("withdraw", "cancel", wid, check=False)
    assert rc == 2 and out["error"]["code"] == "invalid_withdrawal_state" and "withdraw void" in out["error"]["message"]
    assert state(shop, wid) == "signed" and held(shop) == inputs_of(w)

    voided = shop.cli("withdraw", "void", wid)[1]
    void = voided["void"]
    assert (voided["withdrawal_id"], voided["state"]) == (wid, "signed")
    assert void["state"] == "broadcast" and void["replaces"] == wid and void["kind"] == "void"
    assert inputs_of(void) == inputs_of(w)
    assert [o["change"] for o in void["outputs"]] == [True]          # back to our own change chain
    assert void["txid"] in await node.call("getrawmempool")
    assert held(shop) == inputs_of(w)                                # still held while the void is unconfirmed
    await node.mine(1)
    events = shop.poll()
    assert ("withdrawal_voided", wid) in [(e["kind"], e["subject"]) for e in events]
    assert ("withdrawal_confirmed", void["withdrawal_id"]) in [(e["kind"], e["subject"]) for e in events]
    assert state(shop, wid) == "voided"
    rc, out = shop.cli("withdraw", "cancel", wid, check=False)
    assert rc == 2
    await node.mine(5)
    events = shop.poll()
    assert ("withdrawal_completed", void["withdrawal_id"]) in [(e["kind"], e["subject"]) for e in events]
    assert held(shop) == set()                                       # the chain settled it


async def test_a_crash_after_sendrawtransaction_leaves_finalized_and_cancel_is_refused(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    w, _ = await signed_withdrawal(node, shop)
    wid = w["withdrawal_id"]
    # Finalize through our own code path but let the "process" die before recording BROADCAST:
    # the node already has the transaction.
    c = shop.container()
    broadcaster = await provided(c.services.broadcaster())
    from kaccy_bitcoin.application.withdrawals import read_withdrawal

    uow = c.storage.uow()
    loaded = await read_withdrawal(uow, wid)
    await broadcaster.finalize(loaded)
    with uow() as u:
        u.withdrawals.save(loaded)
        u.commit()
    from kaccy_bitcoin.domain.psbt import finalize_psbt
    from kaccy_bitcoin.domain.bitcoin import Network

    _, raw, txid = finalize_psbt(Network.REGTEST, loaded.psbt)
    await node.call("sendrawtransaction", raw.hex())
    await node.settle()
    await shutdown(c)
    assert state(shop, wid) == "finalized"
    rc, out = shop.cli("withdraw", "cancel", wid, check=False)
    assert rc == 2 and "withdraw void" in out["error"]["message"]
    events = shop.poll()
    assert [(e["kind"], e["subject"], e["txid"]) for e in events if e["kind"] == "withdrawal_broadcast"] == [
        ("withdrawal_broadcast", wid, txid.value)]
    assert state(shop, wid) == "broadcast"
    assert shop.cli("withdraw", "broadcast", wid)[1] == {"withdrawal_id": wid, "txid": txid.value,
                                                         "state": "broadcast"}   # idempotent


async def test_a_signed_psbt_broadcast_from_outside_is_followed_to_confirmed(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 150_000))
    hot = await hot_wallet(node, shop)
    # One withdrawal signed by us and sent by somebody else with the node's own tools ...
    w, _ = await signed_withdrawal(node, shop, 60_000, "--fee-rate", "20")
    signed_psbt = shop.cli("withdraw", "show", w["withdrawal_id"])[1]["psbt"]
    final = await node.call("finalizepsbt", signed_psbt)
    txid = await node.call("sendrawtransaction", final["hex"])
    # ... and one we only created, signed elsewhere (a node wallet with the keys) and sent from there.
    dest = await node.call("getnewaddress", wallet="miner")
    created = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "40000", "--fee-rate", "20")[1]
    processed = await node.call("walletprocesspsbt", created["psbt"], True, "ALL", True, True, wallet=hot)
    other = await node.call("sendrawtransaction", processed["hex"])
    await node.settle()
    events = shop.poll()
    seen = {(e["subject"], e["txid"]) for e in events if e["kind"] == "withdrawal_broadcast"}
    assert seen == {(w["withdrawal_id"], txid), (created["withdrawal_id"], other)}
    assert not [e for e in events if e["kind"] == "unexpected_spend"]
    for wid in (w["withdrawal_id"], created["withdrawal_id"]):
        rc, out = shop.cli("withdraw", "cancel", wid, check=False)
        assert rc == 2 and out["error"]["code"] == "invalid_withdrawal_state"
    await node.mine(1)
    events = shop.poll()
    assert sorted(e["subject"] for e in events if e["kind"] == "withdrawal_confirmed") == sorted(
        [w["withdrawal_id"], created["withdrawal_id"]])
    assert state(shop, created["withdrawal_id"]) == "confirmed"
    await node.mine(5)
    assert sorted(e["subject"] for e in shop.poll() if e["kind"] == "withdrawal_completed") == sorted(
        [w["withdrawal_id"], created["withdrawal_id"]])
    assert state(shop, w["withdrawal_id"]) == "completed"
    c = shop.container()
    with c.storage.uow()() as u:
        assert u.withdrawals.unsettled() == []          # completed: no longer asked about
    await shutdown(c)


async def test_rbf_checks_bip125_and_leaves_the_original_intact_until_the_node_takes_a_replacement(
        node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000))
    w, dest = await signed_withdrawal(node, shop, 80_000, "--fee-rate", "2")
    wid = w["withdrawal_id"]
    old_txid = shop.cli("withdraw", "broadcast", wid)[1]["txid"]
    # A child spending the change adds descendant fees the replacement must also cover (rule 3).
    child = shop.cli("withdraw", "cpfp", wid, "--fee-rate", "30")[1]
    shop.cli("withdraw", "sign", child["withdrawal_id"], "--signer", "software")
    shop.cli("withdraw", "broadcast", child["withdrawal_id"])
    entry = await node.call("getmempoolentry", old_txid)
    rc, out = shop.cli("withdraw", "bump", wid, "--fee-rate", "3", check=False)
    assert rc == 2 and out["error"]["code"] == "fee_too_low" and "BIP125" in out["error"]["message"]
    minimum = int(round(float(entry["fees"]["descendant"]) * 1e8))
    assert int(out["error"]["message"].split("at least ")[1].split(" sat")[0]) > minimum
    before = shop.cli("withdraw", "show", wid)[1]
    bumped = shop.cli("withdraw", "bump", wid, "--fee-rate", "60")[1]
    assert bumped["replaces"] == wid and inputs_of(w) <= inputs_of(bumped)
    assert shop.cli("withdraw", "show", wid)[1] == before              # untouched until the node takes it
    assert held(shop) >= inputs_of(w)
    shop.cli("withdraw", "cancel", bumped["withdrawal_id"])            # a replacement given up ...
    assert shop.cli("withdraw", "show", wid)[1] == before              # ... leaves the original as it was
    assert held(shop) >= inputs_of(w)
    again = shop.cli("withdraw", "bump", wid, "--fee-rate", "60")[1]
    shop.cli("withdraw", "sign", again["withdrawal_id"], "--signer", "software")
    new_txid = shop.cli("withdraw", "broadcast", again["withdrawal_id"])[1]["txid"]
    mempool = await node.call("getrawmempool")
    assert new_txid in mempool and old_txid not in mempool
    assert shop.cli("withdraw", "show", wid)[1]["replaced_by"] == again["withdrawal_id"]
    await node.mine(1)
    events = shop.poll()
    moves = {(e["kind"], e["subject"]) for e in events}
    assert {("withdrawal_confirmed", again["withdrawal_id"]), ("withdrawal_replaced", wid),
            ("withdrawal_conflicted", child["withdrawal_id"])} <= moves
    assert state(shop, wid) == "replaced"
    assert held(shop) >= inputs_of(w)            # a sibling could still confirm until the winner is final
    await node.mine(5)
    shop.poll()
    assert held(shop) == set()


async def test_stuck_in_the_mempool_is_reported_with_the_rate_that_would_confirm_it(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,), KACCY_STUCK_AFTER="0")
    w, _ = await signed_withdrawal(node, shop, 50_000, "--fee-rate", "1")
    shop.cli("withdraw", "broadcast", w["withdrawal_id"])
    events = [e for e in shop.poll() if e["kind"] == "withdrawal_stuck"]
    assert len(events) == 1 and events[0]["in_mempool"] is True
    assert float(events[0]["fee_rate_sat_vb"]) >= 1 and float(events[0]["suggested_fee_rate_sat_vb"]) > 0
    assert not [e for e in shop.poll() if e["kind"] == "withdrawal_stuck"]   # once


async def test_sign_waiting_on_a_person_blocks_nobody_and_loses_to_a_cancel(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000")[1]
    c = shop.container()
    sign = await provided(c.services.sign_withdrawal())
    real = await sign.signer("software")
    release = asyncio.Event()

    class SlowDevice:
        """A hardware wallet waiting for a person to press the button."""
        name = "slow"

        async def sign(self, psbt: str):  # noqa: ANN201
            await asyncio.wait_for(release.wait(), 15)
            return await real.sign(psbt)

    sign._signers = {"slow": lambda: SlowDevice()}
    signing = asyncio.create_task(sign(w["withdrawal_id"], "slow"))
    await asyncio.sleep(0.5)

    def timed(*args: str) -> float:
        start = time.monotonic()
        shop.cli(*args)
        return time.monotonic() - start

    baseline = await asyncio.to_thread(timed, "order", "show", "fund-0")
    durations = [await asyncio.to_thread(timed, "order", "create", "while-signing", "--amount-sat", "1000"),
                 await asyncio.to_thread(timed, "order", "show", "while-signing")]
    # Nothing waits on the database lock: each answers as fast as an order show with no signer.
    assert all(d < max(1.0, baseline + 0.5) for d in durations), (durations, baseline)
    assert (await asyncio.to_thread(shop.cli, "withdraw", "cancel", w["withdrawal_id"]))[1]["state"] == "rejected"
    release.set()
    with pytest.raises(Exception) as err:
        await signing
    assert getattr(err.value, "code", "") == "concurrent_update"
    assert state(shop, w["withdrawal_id"]) == "rejected"
    await shutdown(c)


async def test_two_processes_broadcasting_at_once_record_one_broadcast(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    w, _ = await signed_withdrawal(node, shop)
    procs = [subprocess.Popen([CLI, "withdraw", "broadcast", w["withdrawal_id"]], env=shop.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    ok = [r for r in results if "txid" in r]
    assert ok and all(r["state"] == "broadcast" for r in ok)
    assert all("txid" in r or r["error"]["code"] == "concurrent_update" for r in results), results
    shown = shop.cli("withdraw", "show", w["withdrawal_id"])[1]
    assert shown["state"] == "broadcast" and shown["txid"] in await node.call("getrawmempool")


async def test_no_blind_signing_or_sending_of_a_psbt_that_pays_something_else(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000))
    dest = await node.call("getnewaddress", wallet="miner")
    thief = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", "--fee-rate", "20")[1]
    other = shop.cli("withdraw", "create", "--to", thief, "--amount-sat", "150000", "--fee-rate", "20")[1]
    from sqlalchemy import text

    from kaccy_bitcoin.adapters.sql.storage import make_engine

    def tamper(psbt: str) -> None:
        engine = make_engine(shop.env["KACCY_DATABASE_URL"])
        with engine.begin() as conn:
            conn.execute(text("UPDATE kaccy_withdrawals SET psbt = :p WHERE withdrawal_id = :w"),
                         {"p": psbt, "w": w["withdrawal_id"]})
        engine.dispose()

    tamper(other["psbt"])   # the stored PSBT now pays someone else
    rc, out = shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software", check=False)
    assert rc == 2 and out["error"]["code"] == "psbt_mismatch"
    tamper(w["psbt"])
    signed = shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")[1]
    shop.cli("withdraw", "sign", other["withdrawal_id"], "--signer", "software")
    tamper(shop.cli("withdraw", "show", other["withdrawal_id"])[1]["psbt"])   # signed, for the other payout
    rc, out = shop.cli("withdraw", "broadcast", w["withdrawal_id"], check=False)
    assert rc == 2 and out["error"]["code"] == "psbt_mismatch"
    assert not set(await node.call("getrawmempool")) & {signed.get("txid", "")}
    tamper(signed["psbt"])
    assert shop.cli("withdraw", "broadcast", w["withdrawal_id"])[1]["state"] == "broadcast"


async def test_two_processes_on_postgresql_cannot_both_win(node, tmp_path) -> None:
    import os

    url = os.environ.get("KACCY_TEST_DATABASE_URL")
    if not url:
        pytest.skip("KACCY_TEST_DATABASE_URL is not set")
    from tests.conftest import fresh_engine

    fresh_engine("postgresql", tmp_path).dispose()
    shop = await funded_shop(node, tmp_path, amounts=(200_000,), KACCY_DATABASE_URL=url)
    w, _ = await signed_withdrawal(node, shop)
    procs = [subprocess.Popen([CLI, "withdraw", action, w["withdrawal_id"]], env=shop.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for action in ("broadcast", "broadcast", "cancel")]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert results[2]["error"]["code"] == "invalid_withdrawal_state"          # signed: never cancelled
    assert all("txid" in r or r["error"]["code"] == "concurrent_update" for r in results[:2]), results
    shown = shop.cli("withdraw", "show", w["withdrawal_id"])[1]
    assert shown["state"] == "broadcast" and shown["txid"] in await node.call("getrawmempool")


async def test_when_the_original_wins_the_race_the_void_is_refused_and_the_original_confirms(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    w, _ = await signed_withdrawal(node, shop, 60_000, "--fee-rate", "5")
    wid = w["withdrawal_id"]
    txid = shop.cli("withdraw", "broadcast", wid)[1]["txid"]
    await node.mine(1)                      # mined before the monitor knew: the original won
    rc, out = shop.cli("withdraw", "void", wid, check=False)
    assert rc == 1 and out["error"]["code"] == "rejected_by_node"
    events = shop.poll()
    assert ("withdrawal_confirmed", wid) in [(e["kind"], e["subject"]) for e in events]
    assert state(shop, wid) == "confirmed"
    shown = shop.cli("withdraw", "show", wid)[1]
    assert (shown["txid"], shown["confirmations"]) == (txid, 1)
    rc, out = shop.cli("withdraw", "void", wid, check=False)
    assert rc == 2 and "too late" in out["error"]["message"]


async def test_a_broadcast_withdrawal_double_spent_by_a_stranger_is_conflicted(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    hot = await hot_wallet(node, shop)
    w, dest = await signed_withdrawal(node, shop, 60_000, "--fee-rate", "1")
    wid = w["withdrawal_id"]
    ours = shop.cli("withdraw", "broadcast", wid)[1]["txid"]
    # The same coins, signed by another holder of the keys, paying a stranger a higher fee.
    (coin,) = w["inputs"]
    raw = await node.call("createrawtransaction", [{"txid": coin["txid"], "vout": coin["vout"]}],
                          [{dest: f"{(coin['amount_sat'] - 10_000) / 1e8:.8f}"}])
    signed = await node.call("signrawtransactionwithwallet", raw, wallet=hot)
    rival = await node.call("sendrawtransaction", signed["hex"])
    await node.settle()
    mempool = await node.call("getrawmempool")
    assert rival in mempool and ours not in mempool          # full RBF: the stranger outbid us
    await node.mine(1)
    events = shop.poll()
    conflicted = [e for e in events if e["kind"] == "withdrawal_conflicted"]
    assert [(e["subject"], e["conflicting_txid"]) for e in conflicted] == [(wid, rival)]
    assert state(shop, wid) == "conflicted"
    assert held(shop) == inputs_of(w)           # the stranger's block could still be reorged away
    await node.mine(5)
    shop.poll()
    assert held(shop) == set()
