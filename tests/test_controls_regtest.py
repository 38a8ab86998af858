"""Limits, the risk review and the audit trail of withdrawals, through the CLI on regtest
(each command its own process, as users script them)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import fresh_engine
from tests.payments_harness import CLI
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node
ERROR_KEYS = {"code", "message", "limit", "limit_sat", "remaining_sat"}


async def test_limits_refuse_with_their_numbers_and_a_cancel_gives_the_amount_back(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,) * 6)
    dest = await node.call("getnewaddress", wallet="miner")
    assert shop.cli("limits", "set", "--user", "alice", "--daily-sat", "150000", "--single-max-sat", "100000",
                    "--by", "ops")[1] == {"user": "alice", "daily_sat": 150_000, "monthly_sat": None,
                                          "single_max_sat": 100_000, "hourly_sat": None}

    def create(amount: int, user: str = "alice", check: bool = True) -> tuple[int, dict]:
        return shop.cli("withdraw", "create", "--to", dest, "--amount-sat", str(amount), "--fee-rate", "20",
                        "--user", user, check=check)

    rc, out = create(120_000, check=False)
    assert rc == 2 and set(out["error"]) == ERROR_KEYS
    assert (out["error"]["code"], out["error"]["limit"], out["error"]["limit_sat"], out["error"]["remaining_sat"]) == (
        "limit_exceeded", "single", 100_000, 100_000)
    first = create(100_000)[1]
    assert first["state"] == "created" and first["user"] == "alice"
    assert first["risk"] == {"score": 35, "reasons": ["near_limit", "new_destination"]}   # 100k: the single limit
    rc, out = create(60_000, check=False)
    assert rc == 2 and (out["error"]["limit"], out["error"]["remaining_sat"]) == ("daily", 50_000)
    assert create(50_000)[1]["state"] == "created"                      # exactly what remains
    assert create(40_000, user="bob")[1]["state"] == "created"          # another user's limits are his own
    shop.cli("withdraw", "cancel", first["withdrawal_id"], "--by", "ops")
    assert create(60_000)[1]["state"] == "created"                      # the cancelled amount came back

    shop.cli("limits", "set", "--platform-daily-sat", "260000")
    rc, out = create(20_000, user="carol", check=False)    # 50k + 40k + 60k + 100k (cancelled: not counted) so far
    assert rc == 0, out
    rc, out = create(100_000, user="dave", check=False)
    assert rc == 2 and (out["error"]["limit"], out["error"]["limit_sat"], out["error"]["remaining_sat"]) == (
        "platform", 260_000, 90_000)
    shown = shop.cli("withdraw", "show", first["withdrawal_id"])[1]
    assert shown["state"] == "rejected" and shown["risk"] == first["risk"]


async def test_a_withdrawal_to_our_own_deposit_address_is_held_until_an_operator_approves(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(300_000, 300_000))
    ours = shop.order("deposit-1", 10_000)["address"]
    created = shop.cli("withdraw", "create", "--to", ours, "--amount-sat", "50000", "--user", "mallory")[1]
    wid = created["withdrawal_id"]
    assert created["state"] == "held"
    assert created["risk"]["score"] >= 70 and "own_deposit_address" in created["risk"]["reasons"]
    rc, out = shop.cli("withdraw", "sign", wid, "--signer", "software", check=False)
    assert rc == 2 and out["error"]["code"] == "withdrawal_held"
    shown = shop.cli("withdraw", "show", wid)[1]
    assert (shown["state"], shown["risk"]) == ("held", created["risk"])
    rc, out = shop.cli("withdraw", "approve", wid, check=False)
    assert rc == 2 and out["error"]["code"] == "usage"
    assert shop.cli("withdraw", "approve", wid, "--by", "olivia")[1] == {"withdrawal_id": wid, "state": "created"}
    rc, out = shop.cli("withdraw", "approve", wid, "--by", "olivia", check=False)
    assert rc == 2 and out["error"]["code"] == "invalid_withdrawal_state"
    assert shop.cli("withdraw", "sign", wid, "--signer", "software")[1]["state"] == "signed"

    # a second held one is cancelled instead: its coins and its amount come back
    held = shop.cli("withdraw", "create", "--to", ours, "--amount-sat", "20000", "--user", "mallory")[1]
    assert held["state"] == "held"
    assert shop.cli("withdraw", "cancel", held["withdrawal_id"], "--by", "olivia")[1]["state"] == "rejected"

    found = shop.cli("audit", "query", "--subject", wid)[1]["entries"]
    assert [(e["kind"], e["actor"]) for e in found] == [
        ("withdrawal_created", "system"), ("withdrawal_held", "system"), ("withdrawal_approved", "olivia"),
        ("withdrawal_signed", "signer:software")]
    assert found[1]["data"]["risk"] == created["risk"]
    cancelled = shop.cli("audit", "query", "--subject", held["withdrawal_id"])[1]["entries"]
    assert (cancelled[-1]["kind"], cancelled[-1]["actor"]) == ("withdrawal_cancelled", "olivia")
    assert shop.cli("audit", "verify")[1]["ok"] is True


async def test_a_held_withdrawal_alerts_the_notifier(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(300_000,) * 4, KACCY_REVIEW_SCORE="15")
    dest = await node.call("getnewaddress", wallet="miner")
    c = shop.container()
    try:
        manager = await c.services.transaction_manager()
        made = await manager([(dest, 40_000)], None, "erin")     # new_destination alone: 15 >= 15
        assert made["state"] == "held" and made["risk"] == {"score": 15, "reasons": ["new_destination"]}
        assert [(e.kind, e.subject) for e in shop.notifier.notified] == [("withdrawal_held", made["withdrawal_id"])]
        anonymous = await manager([(dest, 40_000)])                # no user: no history rules
        assert anonymous["state"] == "created" and anonymous["risk"] == {"score": 0, "reasons": []}
        # the whole way for a program embedding the library: request, sign, broadcast
        sent = await manager.process([(dest, 30_000)], "software")
        assert sent["state"] == "broadcast" and sent["txid"] in await node.call("getrawmempool")
        assert sent["risk"] == {"score": 0, "reasons": []}
        held = await manager.process([(dest, 30_000)], "software", user="erin")   # again within a minute
        assert held["state"] == "held"
    finally:
        await _shutdown(c)


async def _shutdown(container) -> None:  # noqa: ANN001
    import inspect

    done = container.shutdown_resources()
    if inspect.isawaitable(done):
        await done


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_twenty_concurrent_requests_exactly_five_fit_the_daily_limit(node, tmp_path, kind: str) -> None:
    url = os.environ.get("KACCY_TEST_DATABASE_URL") if kind == "postgresql" else f"sqlite:///{tmp_path}/race.db"
    if not url:
        pytest.skip("KACCY_TEST_DATABASE_URL is not set")
    if kind == "postgresql":
        fresh_engine("postgresql", tmp_path).dispose()
    shop = await funded_shop(node, tmp_path, amounts=(100_000,) * 8, KACCY_DATABASE_URL=url)
    dest = await node.call("getnewaddress", wallet="miner")
    shop.cli("limits", "set", "--user", "racer", "--daily-sat", "150000")
    args = [CLI, "withdraw", "create", "--to", dest, "--amount-sat", "30000", "--fee-rate", "20", "--user", "racer"]
    procs = [subprocess.Popen(args, env=shop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    made = [r for r in results if "withdrawal_id" in r]
    refused = [r["error"] for r in results if "error" in r]
    assert len(made) == 5, results
    assert len(refused) == 15 and {e["code"] for e in refused} == {"limit_exceeded"}, refused
    assert {(e["limit"], e["limit_sat"]) for e in refused} == {("daily", 150_000)}
    assert all(e["remaining_sat"] < 30_000 for e in refused)
    coins = [(i["txid"], i["vout"]) for r in made for i in r["inputs"]]
    assert len(coins) == len(set(coins))                                 # no coin twice
    assert shop.cli("audit", "verify")[1]["ok"] is True


async def test_a_voided_withdrawal_gives_its_amount_back_once_the_void_is_final(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000))
    dest = await node.call("getnewaddress", wallet="miner")
    shop.cli("limits", "set", "--user", "vic", "--daily-sat", "60000")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", "--user", "vic")[1]
    wid = w["withdrawal_id"]
    shop.cli("withdraw", "sign", wid, "--signer", "software")
    void = shop.cli("withdraw", "void", wid, "--by", "olivia")[1]["void"]
    rc, out = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", "--user", "vic", check=False)
    assert rc == 2 and out["error"]["code"] == "limit_exceeded"          # a signed one counts until settled
    await node.mine(1)
    shop.poll()
    assert shop.cli("withdraw", "show", wid)[1]["state"] == "voided"
    await node.mine(5)
    shop.poll()
    assert shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", "--user", "vic")[1]["state"] == (
        "created")
    kinds = [(e["kind"], e["actor"]) for e in shop.cli("audit", "query", "--subject", wid)[1]["entries"]]
    assert ("withdrawal_void_requested", "olivia") in kinds and ("withdrawal_voided", "system") in kinds
    assert ("withdrawal_created", "system") in [
        (e["kind"], e["actor"]) for e in shop.cli("audit", "query", "--subject", void["withdrawal_id"])[1]["entries"]]
    assert shop.cli("audit", "verify")[1]["ok"] is True


async def test_a_batch_rbf_adding_payouts_is_held_to_the_original_users_limits(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000, 200_000))
    dest, other = [await node.call("getnewaddress", wallet="miner") for _ in range(2)]
    shop.cli("limits", "set", "--user", "wes", "--daily-sat", "100000")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", "--fee-rate", "2", "--user", "wes")[1]
    shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")
    shop.cli("withdraw", "broadcast", w["withdrawal_id"])
    rc, out = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "10", "--to", other, "--amount-sat",
                       "60000", check=False)
    assert rc == 2 and (out["error"]["code"], out["error"]["limit"], out["error"]["remaining_sat"]) == (
        "limit_exceeded", "daily", 50_000)
    bumped = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "10", "--to", other, "--amount-sat",
                      "40000")[1]
    assert bumped["replaces"] == w["withdrawal_id"] and bumped["user"] == "wes"
    rc, out = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "20000", "--user", "wes", check=False)
    assert rc == 2 and out["error"]["remaining_sat"] == 10_000
    # a plain RBF (no new payouts) takes nothing more
    assert shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "12")[1]["replaces"] == w["withdrawal_id"]
    assert shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "10000", "--user", "wes")[1]["state"] == (
        "created")


async def test_a_batch_rbf_adding_payouts_is_a_new_payout_tier_capped_and_risk_reviewed(node, tmp_path) -> None:
    """The replacement pays out everything again from the original's wallet: its tier cap holds
    for the whole of it; its new destinations go through the risk review (held when risky)."""
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000, 200_000),
                             KACCY_CUSTODY_TIERS="hot=default:100000,cold=vault")
    dest, other = [await node.call("getnewaddress", wallet="miner") for _ in range(2)]
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", "--fee-rate", "2")[1]
    shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")
    shop.cli("withdraw", "broadcast", w["withdrawal_id"])
    rc, out = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "10", "--to", other, "--amount-sat",
                       "60000", check=False)
    assert rc == 2 and (out["error"]["code"], out["error"]["message"]) == (
        "tier_exceeded", "110000 sat is above the 100000 sat cap of tier hot (wallet default): pay it from a "
                         "colder tier's wallet")
    ours = shop.order("deposit-1", 10_000)["address"]
    bumped = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "10", "--to", ours, "--amount-sat",
                      "20000")[1]
    assert bumped["state"] == "held" and bumped["replaces"] == w["withdrawal_id"]
    assert "own_deposit_address" in bumped["risk"]["reasons"] and bumped["risk"]["score"] >= 70
    rc, out = shop.cli("withdraw", "sign", bumped["withdrawal_id"], "--signer", "software", check=False)
    assert rc == 2 and out["error"]["code"] == "withdrawal_held"
    shop.cli("withdraw", "approve", bumped["withdrawal_id"], "--by", "olivia")
    assert shop.cli("withdraw", "sign", bumped["withdrawal_id"], "--signer", "software")[1]["state"] == "signed"
    sent = shop.cli("withdraw", "broadcast", bumped["withdrawal_id"])[1]
    assert sent["state"] == "broadcast" and sent["txid"] in await node.call("getrawmempool")
    kinds = [e["kind"] for e in shop.cli("audit", "query", "--subject", bumped["withdrawal_id"])[1]["entries"]]
    assert kinds[:3] == ["withdrawal_created", "withdrawal_held", "withdrawal_approved"]
