"""Incoming-payment benchmarks: prints a table, each figure beside its reference from the same run.

Run: `make bench` (or `BITCOIND=... .venv/bin/python bench/incoming.py`). Starts its own
regtest node in a temporary dir for the RPC and poll figures.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import secrets
import tempfile
import time

from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins, P2WPKHAddrEncoder

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend
from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.adapters.memory.clock import SystemClock
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.monitor import PollPayments
from kaccy_bitcoin.application.orders import CreateOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.bootstrap.tuning import GcPausedDuring, freeze_startup_objects
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import Satoshis
from table import print_table  # noqa: E402 - bench/ is the script's own folder

ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, ours: str, reference: str, target: str) -> None:
    ROWS.append((what, ours, reference, target))
    print(f"  measured: {what}: {ours}", flush=True)


def best_of(runs: int, fn) -> float:  # noqa: ANN001
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def account():  # noqa: ANN201
    seed = Bip39SeedGenerator(" ".join(["abandon"] * 11 + ["about"])).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0)


def bench_derivation() -> None:
    acc = account()
    deriver = Bip32AddressDeriver(acc.PublicKey().ToExtended(), Network.REGTEST)
    node = acc.Bip32Object().ChildKey(0)
    n = 20_000

    def library_loop() -> None:
        for i in range(n):
            P2WPKHAddrEncoder.EncodeKey(node.ChildKey(i).PublicKey().KeyObject(), hrp="bcrt")

    ref = n / best_of(3, library_loop)
    ours = n / best_of(3, lambda: deriver.addresses(0, 0, n))
    assert deriver.addresses(0, 0, 100) == [P2WPKHAddrEncoder.EncodeKey(node.ChildKey(i).PublicKey().KeyObject(),
                                                                        hrp="bcrt") for i in range(100)]
    row("BIP84 derivation, 1 process", f"{ours:,.0f} addr/s ({ours / ref:.2f}x)",
        f"bip-utils loop, cached chain node: {ref:,.0f} addr/s", ">= 17,000/s and >= 1.45x")
    bulk = 200_000
    par = bulk / best_of(2, lambda: deriver.addresses_parallel(0, 0, bulk, workers=2))
    row("BIP84 bulk pre-derivation, 2 processes", f"{par:,.0f} addr/s", f"1 process: {ours:,.0f} addr/s",
        ">= 30,000/s")


def bench_matching() -> None:
    watched = {f"bcrt1q{secrets.token_hex(19)}": f"order-{i}" for i in range(1_000_000)}
    keys = list(watched)
    outputs = [keys[i * 7 % len(keys)] if i % 2 else f"bcrt1q{secrets.token_hex(19)}" for i in range(1_000_000)]

    def match() -> None:
        get = watched.get
        for address in outputs:
            get(address)

    rate = len(outputs) / best_of(3, match)
    row("match outputs against 1,000,000 watched addresses", f"{rate:,.0f} outputs/s",
        "dict lookup per output (reference 5-6M/s)", ">= 2,000,000/s")


async def pay_new_orders(rpc: BitcoinRpc, tmp: pathlib.Path, miner: str, n: int):  # noqa: ANN201
    """n orders in a SQLite store, each paid by its own transaction now in the mempool; returns
    the monitor's poll (already run once before the payments, as a running monitor would)."""
    acc = account()
    deriver = Bip32AddressDeriver(acc.PublicKey().ToExtended(), Network.REGTEST)
    backend = BitcoinCoreBackend(rpc, wallet="bench-watch")
    uow = SqlUnitOfWorkFactory(make_engine(f"sqlite:///{tmp}/bench.db"))
    settings = PaymentSettings()
    create = CreateOrder(uow, deriver, WatchRange(deriver, backend, 1000), SystemClock(), settings)
    orders = [await create(f"o{i}", Satoshis(10_000 + i)) for i in range(n)]
    poll = GcPausedDuring(PollPayments(uow, backend, SystemClock(), RecordingPublisher(), settings))
    await poll()
    freeze_startup_objects()   # as `kaccy-bitcoin monitor` and `run` do once started
    # n confirmed coins first, so the payments do not chain on unconfirmed change
    # (the mempool allows 25 descendants).
    own = await rpc.batch([("getnewaddress", [])] * n, wallet="miner")
    await rpc.call("sendmany", "", {a: "0.01" for a in own}, wallet="miner")
    await rpc.call("generatetoaddress", 1, miner)
    # One explicit coin per payment (Knots 29's sendtoaddress answered "map::at" with
    # 1,000 coins in the wallet).
    coins = await rpc.call("listunspent", 1, 9999999, own, wallet="miner")
    raws = await rpc.batch([("createrawtransaction", [[{"txid": c["txid"], "vout": c["vout"]}],
                                                      [{o["address"]: Satoshis(o["amount_sat"]).to_btc()},
                                                       {own[0]: "0.0098"}]])
                            for c, o in zip(coins, orders)])
    signed = await rpc.batch([("signrawtransactionwithwallet", [r]) for r in raws], wallet="miner")
    sent = await rpc.batch([("sendrawtransaction", [s["hex"]]) for s in signed])
    failed = [r for r in sent if isinstance(r, Exception)]
    assert not failed, failed[0]
    return poll


@contextlib.asynccontextmanager
async def started_node(tmp: pathlib.Path):  # noqa: ANN201
    """A regtest node in `tmp` with a "miner" wallet holding mature coins; yields (rpc, miner address)."""
    node = RegtestNode(tmp / "node")
    node.start()
    rpc = BitcoinRpc(node.url, user=node.user, password=node.password)
    try:
        await rpc.call("createwallet", "miner")
        miner = await rpc.call("getnewaddress", wallet="miner")
        await rpc.call("generatetoaddress", 110, miner)
        yield rpc, miner
    finally:
        await rpc.close()
        node.stop()


async def bench_node(tmp: pathlib.Path) -> None:
    async with started_node(tmp) as (rpc, miner):
        n = 1000
        t = time.perf_counter()
        for h in range(n):
            await rpc.call("getblockhash", h % 100)
        single = n / (time.perf_counter() - t)
        t = time.perf_counter()
        await rpc.batch([("getblockhash", [h % 100]) for h in range(n)])
        batched = n / (time.perf_counter() - t)
        row("JSON-RPC calls, batched", f"{batched:,.0f} calls/s ({batched / single:.1f}x)",
            f"one call per request: {single:,.0f} calls/s", ">= 5x")

        poll = await pay_new_orders(rpc, tmp, miner, n)
        t = time.perf_counter()
        events = await poll()
        first = time.perf_counter() - t
        assert sum(e.kind == "payment_detected" for e in events) == n, len(events)
        await rpc.call("generatetoaddress", 1, miner)
        # Wallet RPCs wait until the node's wallet has processed the new block (1,000 of its
        # transactions); that catch-up is the node's, measured apart from our poll.
        t = time.perf_counter()
        await rpc.call("getbalances", wallet="bench-watch")
        await rpc.call("getbalances", wallet="miner")
        catch_up = time.perf_counter() - t
        t = time.perf_counter()
        events = await poll()
        confirmed = time.perf_counter() - t
        assert sum(e.kind == "payment_confirmed" for e in events) == n
        deeper = []
        for depth in (2, 3, 4, 5):   # every order's depth changes; at 3 each becomes full_confirmed
            await rpc.call("generatetoaddress", 1, miner)
            await rpc.call("getbalances", wallet="bench-watch")
            await rpc.call("getbalances", wallet="miner")
            t = time.perf_counter()
            events = await poll()
            deeper.append(time.perf_counter() - t)
            if depth == 3:
                assert sum(e.kind == "payment_confirmed" for e in events) == n
        t = time.perf_counter()
        await poll()
        quiet = time.perf_counter() - t
        # The machine's yardstick: the node's own answer to the poll's first question.
        lsb_times = []
        for _ in range(5):
            t = time.perf_counter()
            await rpc.call("listsinceblock", "", 6, True, True, wallet="bench-watch")
            lsb_times.append(time.perf_counter() - t)
        lsb = min(lsb_times)
        row("poll: 1,000 new txs in the mempool (RPC, matching, machines, SQLite commit)",
            f"{first * 1000:,.0f} ms", "", "<= 100 ms")
        row("poll: the same 1,000 txs confirmed (RPC, matching, machines, SQLite commit)",
            f"{confirmed * 1000:,.0f} ms", f"node's own wallet catch-up before it: {catch_up * 1000:,.0f} ms",
            "<= 100 ms")
        row("poll: 1,000 orders' depth +1 (blocks 2, 3 (full_confirmed), 4, 5)",
            " / ".join(f"{d * 1000:,.0f}" for d in deeper) + " ms", "", "<= 100 ms")
        row("poll: nothing changed (1,000 unsettled orders)", f"{quiet * 1000:,.0f} ms",
            f"listsinceblock of 1,000 entries alone (RPC + JSON): {lsb * 1000:,.0f} ms", "")


def main() -> None:
    print(f"kaccy-bitcoin incoming benchmarks on {os.cpu_count()} cores", flush=True)
    # As `kaccy-bitcoin` does once started: the imported modules leave the cyclic GC's reach.
    # Without it the first large RPC answer in a fresh process triggers a full collection of
    # every imported module's objects (~60 ms here), which is start-up cost, not batching's.
    freeze_startup_objects()
    bench_derivation()
    bench_matching()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench_node(pathlib.Path(tmp)))
    print_table(ROWS)


if __name__ == "__main__":
    main()
