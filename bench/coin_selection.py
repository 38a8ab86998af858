"""Coin selection against Bitcoin Core's own, over a long sequence of withdrawals and deposits.

Two pools start with the same coins. Core's pool is a real regtest wallet: each withdrawal
is funded by `walletcreatefundedpsbt` (Core's selection), signed, broadcast and mined. Ours is
simulated with `select_coins`: the chosen coins leave the pool and the change joins it. Both
get the same deposits and the same payouts at the same fee rates. The waste of both sides is
computed with one formula (Core's: input fees at the rate minus at the long-term rate, plus
the cost of change or the excess). Run: `make bench` (or `.venv/bin/python bench/coin_selection.py
--seed 1 --seed 2 --seed 3`: one payout sequence per seed, each against a fresh Core wallet).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import statistics
import tempfile
from decimal import Decimal

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import (
    OUTPUT_WEIGHT,
    P2WPKH_INPUT_WEIGHT,
    TX_OVERHEAD_WEIGHT,
    Coin,
    SelectionParams,
    select_coins,
    vsize,
)
from kaccy_bitcoin.domain.errors import InsufficientFunds
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

STEPS = 150
START_COINS = 40


def sats(btc: Decimal) -> int:
    return int(Decimal(btc) * 100_000_000)


def waste_of(inputs: int, change: bool, excess: int, params: SelectionParams) -> int:
    per_input = (params.fee_rate.fee_for(vsize(P2WPKH_INPUT_WEIGHT)).value
                 - params.long_term_fee_rate.fee_for(vsize(P2WPKH_INPUT_WEIGHT)).value)
    return inputs * per_input + (params.cost_of_change if change else excess)


async def run_seed(rpc: BitcoinRpc, miner: str, seed: int) -> list[dict]:
    """One payout sequence from `seed`, through both pools; a fresh Core wallet per seed."""
    rng = random.Random(seed)
    # Our pool's made-up txids come from their own generator, so that the payouts, rates and
    # deposits depend on the seed alone, not on which coins and change our selection made.
    ids = random.Random(f"txids-{seed}")
    wallet = f"core-{seed}"
    await rpc.call("createwallet", wallet)
    ours: dict[OutPoint, int] = {}
    amounts = [rng.randint(20_000, 3_000_000) for _ in range(START_COINS)]

    async def deposit(values: list[int]) -> None:
        addresses = await rpc.batch([("getnewaddress", ["", "bech32"])] * len(values), wallet=wallet)
        await rpc.call("sendmany", "", {a: str(Decimal(v) / 100_000_000) for a, v in zip(addresses, values)},
                       wallet="miner")
        for v in values:   # our pool gets coins of the same values
            ours[OutPoint(Txid(f"{ids.getrandbits(256):064x}"), 0)] = v

    await deposit(amounts)
    await rpc.call("generatetoaddress", 1, miner)
    rows = []
    for step in range(STEPS):
        if step % 5 == 4:
            await deposit([rng.randint(10_000, 2_000_000) for _ in range(rng.randint(1, 4))])
        rate = rng.choice([1, 2, 3, 5, 8, 12, 20, 35])
        payout = rng.randint(10_000, 1_500_000)
        params = SelectionParams(FeeRate.from_sat_per_vb(rate))
        dest = await rpc.call("getnewaddress", "", "bech32", wallet="miner")
        fixed = TX_OVERHEAD_WEIGHT + OUTPUT_WEIGHT["p2wpkh"]
        try:
            sel = select_coins([Coin(op, Satoshis(v)) for op, v in ours.items()], Satoshis(payout), fixed,
                               params, random.Random(step))
        except InsufficientFunds:
            continue
        funded = await rpc.call("walletcreatefundedpsbt", [], [{dest: str(Decimal(payout) / 100_000_000)}],
                                0, {"fee_rate": rate, "change_type": "bech32"}, wallet=wallet)
        decoded = await rpc.call("decodepsbt", funded["psbt"])
        core_inputs = len(decoded["tx"]["vin"])
        core_change = funded["changepos"] != -1
        core_fee = sats(funded["fee"])
        core_excess = 0
        # Core's fee without change includes the excess; its waste counts only the excess.
        if not core_change:
            base_fee = params.fee_rate.fee_for(vsize(fixed + core_inputs * P2WPKH_INPUT_WEIGHT)).value
            core_excess = core_fee - base_fee
        signed = await rpc.call("walletprocesspsbt", funded["psbt"], True, wallet=wallet)
        await rpc.call("sendrawtransaction", signed["hex"])
        for c in sel.coins:
            del ours[c.outpoint]
        if sel.change.value:
            ours[OutPoint(Txid(f"{ids.getrandbits(256):064x}"), 1)] = sel.change.value
        if step % 3 == 2:
            await rpc.call("generatetoaddress", 1, miner)
        core_pool = len(await rpc.call("listunspent", 0, 9_999_999, [], True, wallet=wallet))
        rows.append({"step": step, "rate": rate, "payout": payout, "ours_waste": sel.waste,
                     "ours_fee": sel.fee.value, "ours_inputs": len(sel.coins), "ours_change": bool(sel.change.value),
                     "core_waste": waste_of(core_inputs, core_change, core_excess, params),
                     "core_fee": core_fee, "core_inputs": core_inputs, "core_change": core_change,
                     "ours_pool": len(ours), "core_pool": core_pool, "ours_alg": sel.algorithm})
    return rows


def report(seed: int, rows: list[dict]) -> dict[str, int]:
    total = {k: sum(r[k] for r in rows) for k in ("ours_waste", "core_waste", "ours_fee", "core_fee")}
    print(f"seed {seed}: {len(rows)} withdrawals at 1-35 sat/vB, deposits every 5th step, "
          f"{START_COINS} starting coins")
    print()
    print(f"{'':28} | {'ours':>12} | {'Bitcoin Core':>12}")
    print(f"{'-' * 28}-+-{'-' * 12}-+-{'-' * 12}")
    print(f"{'total waste (sat)':28} | {total['ours_waste']:>12,} | {total['core_waste']:>12,}")
    print(f"{'total fees (sat)':28} | {total['ours_fee']:>12,} | {total['core_fee']:>12,}")
    print(f"{'final UTXO pool (coins)':28} | {rows[-1]['ours_pool']:>12} | {rows[-1]['core_pool']:>12}")
    print(f"{'median UTXO pool (coins)':28} | {statistics.median(r['ours_pool'] for r in rows):>12} | "
          f"{statistics.median(r['core_pool'] for r in rows):>12}")
    algs = {a: sum(r['ours_alg'] == a for r in rows) for a in {r['ours_alg'] for r in rows}}
    print(f"{'our algorithm wins':28} | {', '.join(f'{a} {n}' for a, n in sorted(algs.items()))}")
    diff = total["ours_waste"] - total["core_waste"]
    scale = max(abs(total["core_waste"]), 1)
    print()
    print(f"waste difference: {diff:+,} sat ({diff / scale:+.1%} of |Core's waste|); "
          f"fee difference: {total['ours_fee'] - total['core_fee']:+,} sat "
          f"({(total['ours_fee'] - total['core_fee']) / total['core_fee']:+.1%})")
    print()
    return total


async def main(seeds: list[int], dump: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        node = RegtestNode(pathlib.Path(tmp) / "node")
        node.start()
        rpc = BitcoinRpc(node.url, user=node.user, password=node.password)
        try:
            await rpc.call("createwallet", "miner")
            miner = await rpc.call("getnewaddress", "", "bech32", wallet="miner")
            await rpc.call("generatetoaddress", 150 + 10 * len(seeds), miner)
            results = {}
            for seed in seeds:
                rows = await run_seed(rpc, miner, seed)
                results[seed] = rows
                report(seed, rows)
            if dump:
                pathlib.Path(dump).write_text(json.dumps(results))
            print(f"{'seed':>6} | {'our waste':>10} | {'Core waste':>10} | {'ours <= Core':>12} | "
                  f"{'our fees':>10} | {'Core fees':>10}")
            for seed, rows in results.items():
                w, cw = sum(r["ours_waste"] for r in rows), sum(r["core_waste"] for r in rows)
                f, cf = sum(r["ours_fee"] for r in rows), sum(r["core_fee"] for r in rows)
                print(f"{seed:>6} | {w:>10,} | {cw:>10,} | {'yes' if w <= cw else 'NO':>12} | {f:>10,} | {cf:>10,}")
        finally:
            await rpc.close()
            node.stop()


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--seed", type=int, action="append", dest="seeds",
                     help="the payout sequence's random seed; repeat for several runs (default: 1, 2, 3)")
    cli.add_argument("--dump", help="write every withdrawal's figures, per seed, to this JSON file")
    args = cli.parse_args()
    asyncio.run(main(args.seeds or [1, 2, 3], args.dump))
