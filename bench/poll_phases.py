"""Where a poll's time goes: the bench's 1,000-payment scenario with a timer on each phase.

Run: `BITCOIND=... .venv/bin/python bench/poll_phases.py` (with `PROFILE=confirmed`, say, also
cProfile that poll). Prints, for each poll of the
scenario (mempool, confirmed, depth 2..5, quiet), the milliseconds spent in the node's RPCs,
in translating their answers, in each repository call, in the commit and in the rest (the
domain: matching, state machines, events). The timers wrap methods; they add a few µs per call.
"""
from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import collections
import functools
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from incoming import pay_new_orders, started_node  # noqa: E402

from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend  # noqa: E402
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc  # noqa: E402
from kaccy_bitcoin.adapters.sql import storage as sql  # noqa: E402
from kaccy_bitcoin.ports import storage as ports  # noqa: E402

SPENT: collections.Counter[str] = collections.Counter()


def timed(owner: type, name: str, label: str | None = None) -> None:
    original = getattr(owner, name)
    label = label or f"{owner.__name__}.{name}"
    if asyncio.iscoroutinefunction(original):
        @functools.wraps(original)
        async def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                SPENT[label] += time.perf_counter() - t
    else:
        @functools.wraps(original)
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                SPENT[label] += time.perf_counter() - t
    setattr(owner, name, staticmethod(wrapper) if isinstance(vars(owner).get(name), staticmethod) else wrapper)


def instrument() -> None:
    timed(BitcoinRpc, "call", "rpc: call")
    timed(BitcoinRpc, "batch", "rpc: batch")
    timed(BitcoinCoreBackend, "_entries", "translate entries")
    for repo in (sql.SqlPayments, sql.SqlPaymentRequests, sql.SqlAuditLog, sql.SqlCursors, sql.SqlAddressBook,
                 sql.SqlWithdrawals):
        for name in ("get_many", "save", "unsettled_outputs", "by_outpoints", "by_addresses", "expiring",
                     "append", "set", "get", "mark_used", "in_states"):
            if name in vars(repo):
                timed(repo, name)
    timed(sql.SqlUnitOfWork, "_commit", "commit")
    timed(ports.UnitOfWork, "__aenter__", "begin")


async def scenario(tmp: pathlib.Path) -> None:
    async with started_node(tmp) as (rpc, miner):
        poll = await pay_new_orders(rpc, tmp, miner, 1000)
        instrument()

        async def measured(name: str) -> None:
            await rpc.call("getbalances", wallet="bench-watch")
            await rpc.call("getbalances", wallet="miner")
            SPENT.clear()
            profiler = cProfile.Profile() if os.environ.get("PROFILE") == name else None
            if profiler:
                profiler.enable()
            t = time.perf_counter()
            events = await poll()
            total = time.perf_counter() - t
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "tottime")).print_stats(int(os.environ.get("PROFILE_LINES", "30")))
            parts = dict(SPENT)
            rpc_total = parts.get("rpc: call", 0) + parts.get("rpc: batch", 0)
            accounted = rpc_total + sum(v for k, v in parts.items() if not k.startswith("rpc"))
            print(f"\n{name}: {total * 1000:.0f} ms, {len(events)} events")
            for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
                print(f"  {k:40s} {v * 1000:7.1f} ms")
            print(f"  {'rest (domain, matching, glue)':40s} {(total - accounted) * 1000:7.1f} ms")

        await measured("mempool")
        await rpc.call("generatetoaddress", 1, miner)
        await measured("confirmed")
        for depth in (2, 3, 4, 5):
            await rpc.call("generatetoaddress", 1, miner)
            await measured(f"depth {depth}")
        await measured("quiet")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(scenario(pathlib.Path(d)))
