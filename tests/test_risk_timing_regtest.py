"""The risk review's history and the time to live of withdrawals, through the CLI on regtest:
concurrent requests of one user cannot slip past `rapid_succession`, and a held withdrawal's
time to live counts from its approval."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest

from tests.conftest import fresh_engine
from tests.payments_harness import CLI
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node
RACERS = 10


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_concurrent_requests_of_one_user_are_each_reviewed_against_the_ones_before(node, tmp_path,
                                                                                        kind: str) -> None:
    url = os.environ.get("KACCY_TEST_DATABASE_URL") if kind == "postgresql" else f"sqlite:///{tmp_path}/race.db"
    if not url:
        pytest.skip("KACCY_TEST_DATABASE_URL is not set")
    if kind == "postgresql":
        fresh_engine("postgresql", tmp_path).dispose()
    # Review score 25: `rapid_succession` (25) holds on its own, `new_destination` (15) does not.
    # The user has no limits: the review's history is all that orders the requests.
    shop = await funded_shop(node, tmp_path, amounts=(200_000,) * RACERS, KACCY_DATABASE_URL=url,
                             KACCY_REVIEW_SCORE="25")
    dest = await node.call("getnewaddress", wallet="miner")
    args = [CLI, "withdraw", "create", "--to", dest, "--amount-sat", "30000", "--fee-rate", "30", "--user", "rusher"]
    procs = [subprocess.Popen(args, env=shop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(RACERS)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all("withdrawal_id" in r for r in results), [r.get("error") for r in results]
    # Each saw exactly the ones committed before it: the first no history (a new destination
    # only), the next four one under a minute old (rapid_succession: held), the rest also five
    # or more in the hour (velocity).
    risks = sorted((r["state"], r["risk"]["score"], tuple(r["risk"]["reasons"])) for r in results)
    assert risks == sorted([("created", 15, ("new_destination",))]
                           + [("held", 25, ("rapid_succession",))] * 4
                           + [("held", 45, ("rapid_succession", "velocity"))] * (RACERS - 5)), risks


async def test_a_held_withdrawal_lives_its_ttl_from_its_approval(node, tmp_path) -> None:
    ttl = 16   # long enough for the CLI calls between the approval and the check on a busy machine
    shop = await funded_shop(node, tmp_path, amounts=(100_000, 100_000), KACCY_WITHDRAWAL_TTL=str(ttl))
    ours = shop.order("deposit-1", 10_000)["address"]            # own_deposit_address: held
    ids = []
    for _ in range(2):
        made = shop.cli("withdraw", "create", "--to", ours, "--amount-sat", "20000", "--user", "hugo")[1]
        assert made["state"] == "held"
        ids.append(made["withdrawal_id"])
    created_at = time.monotonic()
    await asyncio.sleep(ttl + 1)                                 # held longer than the TTL
    shop.poll()
    assert [shop.cli("withdraw", "show", w)[1]["state"] for w in ids] == ["held", "held"]   # waits for its operator

    approved_at = time.monotonic()
    for w in ids:
        assert shop.cli("withdraw", "approve", w, "--by", "olivia")[1]["state"] == "created"
    last_approved = time.monotonic()   # the second approval's TTL runs from no later than this
    shop.poll()
    assert time.monotonic() - approved_at < ttl, "too slow to check before the TTL from the approval"
    assert [shop.cli("withdraw", "show", w)[1]["state"] for w in ids] == ["created", "created"]
    assert shop.cli("withdraw", "sign", ids[0], "--signer", "software")[1]["state"] == "signed"
    assert time.monotonic() - created_at > ttl

    await asyncio.sleep(max(0.0, last_approved + ttl + 1 - time.monotonic()))
    shop.poll()
    states = [shop.cli("withdraw", "show", w)[1] for w in ids]
    assert states[0]["state"] == "signed"
    assert (states[1]["state"], states[1].get("reject_reason")) == ("expired", "expired before signing")
