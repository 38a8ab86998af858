"""Consolidation and stats end to end on the real regtest node, through the CLI contract."""
from __future__ import annotations

import os

import pytest

from kaccy_bitcoin.adapters.sql.storage import make_engine
from tests.conftest import empty_kaccy_tables
from tests.payments_harness import kinds
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node

SMALL = (20_000, 30_000, 40_000, 50_000)


STORES = ["sqlite"] + (["postgresql"] if os.environ.get("KACCY_TEST_DATABASE_URL") else [])


@pytest.mark.parametrize("store", STORES)
async def test_plan_run_broadcast_confirm_completed_and_stats(node, tmp_path, store: str) -> None:  # noqa: ANN001
    settings = {}
    if store == "postgresql":
        url = os.environ["KACCY_TEST_DATABASE_URL"]
        empty_kaccy_tables(make_engine(url, check_schema=False))
        settings["KACCY_DATABASE_URL"] = url
    shop = await funded_shop(node, tmp_path, amounts=SMALL, **settings)
    plan = shop.cli("consolidate", "plan", "--fee-rate", "1")[1]
    assert set(plan) == {"wallet", "inputs", "fee_sat", "saving_sat", "fee_rate"}
    assert plan["wallet"] == "default" and plan["fee_rate"] == 1
    assert sorted(i["amount_sat"] for i in plan["inputs"]) == list(SMALL), await _unspent(node, shop)
    assert all(set(i) == {"txid", "vout", "amount_sat"} for i in plan["inputs"])
    vsize = -(-(42 + 4 * 272 + 124) // 4)                     # 4 P2WPKH inputs, one P2WPKH output
    assert plan["fee_sat"] == vsize
    assert plan["saving_sat"] == 3 * 68 * 10 - plan["fee_sat"]  # 3 inputs fewer at 10 sat/vB later
    assert shop.cli("consolidate", "status")[1]["state"] == "PLANNED"
    two = shop.cli("consolidate", "plan", "--fee-rate", "1", "--max-inputs", "2")[1]
    assert sorted(i["amount_sat"] for i in two["inputs"]) == [20_000, 30_000]   # the smallest first

    ran = shop.cli("consolidate", "run", "--fee-rate", "1", "--signer", "software")[1]
    assert set(ran) == {"withdrawal_id", "txid", "state"} and ran["state"] == "broadcast"
    assert ran["txid"] in await node.call("getrawmempool")
    shown = shop.cli("withdraw", "show", ran["withdrawal_id"])[1]
    assert shown["kind"] == "consolidation" and len(shown["inputs"]) == 4
    assert [o["change"] for o in shown["outputs"]] == [True]
    assert shown["outputs"][0]["amount_sat"] == sum(SMALL) - shown["fee_sat"]
    status = shop.cli("consolidate", "status")[1]
    assert (status["state"], status["withdrawal_id"]) == ("CONSOLIDATING", ran["withdrawal_id"])
    rc, out = shop.cli("consolidate", "run", "--fee-rate", "1", check=False)
    assert rc == 2 and out["error"]["code"] == "consolidation_in_progress"

    await node.mine(1)
    events = shop.poll()
    assert "withdrawal_confirmed" in kinds(events) and "consolidation_completed" in kinds(events)
    assert "unexpected_spend" not in kinds(events) and "payment_to_unknown_address" not in kinds(events)
    assert shop.cli("consolidate", "status")[1]["state"] == "COMPLETED"
    logged = [e for e in shop.cli("events", "--limit", "1000")[1]["events"] if e["kind"].startswith("consolidation")]
    assert [e["kind"] for e in logged] == ["consolidation_planned", "consolidation_abandoned",
                                           "consolidation_planned", "consolidation_abandoned",
                                           "consolidation_planned", "consolidation_broadcast",
                                           "consolidation_completed"]

    stats = shop.cli("stats")[1]
    assert stats == {"volume_in_sat": sum(SMALL), "deposits_confirmed": 4, "volume_out_sat": 0,
                     "withdrawals_confirmed": 1, "fees_paid_sat": shown["fee_sat"],
                     "average_confirmation_seconds": stats["average_confirmation_seconds"],
                     "wallets": [{"wallet": "default", "utxo_count": 1,
                                  "confirmed_sat": sum(SMALL) - shown["fee_sat"], "unconfirmed_sat": 0}]}
    assert isinstance(stats["average_confirmation_seconds"], int) and stats["average_confirmation_seconds"] >= 0

    rc, out = shop.cli("consolidate", "plan", "--fee-rate", "1", check=False)   # one coin left
    assert rc == 2 and out["error"]["code"] == "nothing_to_consolidate"
    assert shop.cli("consolidate", "status")[1]["state"] == "IDLE"


async def test_refusals(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(20_000, 30_000, 40_000))
    rc, out = shop.cli("consolidate", "plan", "--wallet", "treasury", check=False)
    assert rc == 2 and out["error"]["code"] == "unknown_wallet" and "treasury" in out["error"]["message"]
    rc, out = shop.cli("consolidate", "plan", "--fee-rate", "10", check=False)   # at the long-term rate
    assert rc == 2 and out["error"]["code"] == "nothing_to_consolidate" and "save" in out["error"]["message"]
    rc, out = shop.cli("consolidate", "run", "--max-inputs", "1", "--fee-rate", "1", check=False)
    assert rc == 2 and out["error"]["code"] == "nothing_to_consolidate"
    assert shop.cli("consolidate", "status")[1]["state"] == "IDLE"
    assert shop.cli("stats")[1]["withdrawals_confirmed"] == 0


async def test_signing_failure_leaves_coins_free_and_the_machine_idle(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(20_000, 30_000, 40_000))
    shop.env["KACCY_SIGNER_CORE_WALLET"] = await node.fresh_wallet()   # holds none of our keys
    rc, out = shop.cli("consolidate", "run", "--fee-rate", "1", "--signer", "core", check=False)
    assert rc == 1 and out["error"]["code"] == "signer_error" and "none of the keys" in out["error"]["message"]
    assert shop.cli("consolidate", "status")[1]["state"] == "IDLE"
    cancelled = [e for e in shop.cli("events", "--limit", "1000")[1]["events"]
                 if e["kind"] == "consolidation_abandoned"]
    assert len(cancelled) == 1 and cancelled[0]["reason"] == "signing failed"
    ran = shop.cli("consolidate", "run", "--fee-rate", "1")[1]   # the same coins again: none was held
    assert ran["state"] == "broadcast"
    assert len(shop.cli("withdraw", "show", ran["withdrawal_id"])[1]["inputs"]) == 3


async def test_the_monitor_proposes_one_when_fees_are_low_and_coins_many(node, tmp_path) -> None:  # noqa: ANN001
    # The node's own estimate may exist by now (earlier tests made blocks full of transactions):
    # a long-term rate far above it keeps "fees are low" true whatever it is.
    shop = await funded_shop(node, tmp_path, amounts=(20_000, 30_000, 40_000), KACCY_FALLBACK_FEE_RATE="1",
                             KACCY_LONG_TERM_FEE_RATE="5000")
    shop.env["KACCY_CONSOLIDATE_ABOVE"] = "3"
    assert "consolidation_proposed" not in kinds(shop.poll())      # 3 coins: not more than 3
    shop.env["KACCY_CONSOLIDATE_ABOVE"] = "2"
    events = shop.poll()
    proposed = [e for e in events if e["kind"] == "consolidation_proposed"]
    assert len(proposed) == 1 and proposed[0]["wallet"] == "default" and proposed[0]["utxo_count"] == 3, (
        events, await _unspent(node, shop))
    assert len(proposed[0]["inputs"]) == 3 and proposed[0]["saving_sat"] > 0
    assert "consolidation_proposed" not in kinds(shop.poll())      # once, not at every poll
    assert shop.cli("consolidate", "status")[1]["state"] == "IDLE"  # a proposal moves nothing


async def _unspent(node, shop) -> list:  # noqa: ANN001
    """The watch wallet's coins, for a failure's message."""
    return await node.call("listunspent", 0, 9_999_999, [], True, wallet=shop.env["KACCY_BITCOIN_RPC_WALLET"])
