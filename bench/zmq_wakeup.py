"""From `sendrawtransaction` to the `payment_detected` event: the monitor woken by the node's ZMQ
notifications, beside the interval poll alone, in the same run.

Run: `BITCOIND=... .venv/bin/python bench/zmq_wakeup.py [PAYMENTS] [INTERVAL_S]` (default 20
payments, a 5 s interval for the interval-only figure). Starts its own regtest node (publishing
`sequence` and `hashblock` on a free port) and runs `kaccy-bitcoin monitor` as its own process,
as a service runs it: with ZMQ (interval 60 s, so only a notification can explain a fast
detection), then with `KACCY_ZMQ=off`. Each payment is sent at a random moment of the interval
(a transaction signed beforehand, so only `sendrawtransaction` is timed), and the clock stops
when the monitor prints the order's `payment_detected` line.
"""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from bip_utils import Bip39MnemonicGenerator, Bip39SeedGenerator, Bip39WordsNum, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode, free_port
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.domain.money import Satoshis
from table import print_table  # noqa: E402 - bench/ is the script's own folder

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")


def vpub() -> str:
    """A fresh account: each run's orders get addresses never paid before."""
    seed = Bip39SeedGenerator(str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12))).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()


async def measure(rpc: BitcoinRpc, env: dict[str, str], label: str, payments: int, interval: float,
                  spread: float) -> list[float]:
    orders = []
    for n in range(payments):
        order_id = f"{label}-{n}"
        out = subprocess.run([CLI, "order", "create", order_id, "--amount-sat", "10000"], env=env,
                             capture_output=True, text=True, check=True)
        orders.append((order_id, json.loads(out.stdout)["address"]))
    monitor = await asyncio.create_subprocess_exec(CLI, "monitor", "--interval", str(interval), env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    detected: dict[str, float] = {}
    arrived = asyncio.Event()

    async def read() -> None:
        while raw := await monitor.stderr.readline():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("kind") == "payment_detected":
                detected[line["subject"]] = time.perf_counter()
                arrived.set()
            elif line.get("monitor") == "started":
                print(f"  {label}: monitor started, notifications {line['notifications']}", flush=True)

    reader = asyncio.create_task(read())
    latencies = []
    try:
        await asyncio.sleep(1.0)   # past the monitor's first poll
        for order_id, address in orders:
            funded = await rpc.call("walletcreatefundedpsbt", [], [{address: Satoshis(10_000).to_btc()}], 0,
                                    {"fee_rate": 2}, wallet="miner")
            signed = await rpc.call("walletprocesspsbt", funded["psbt"], wallet="miner")
            raw = (await rpc.call("finalizepsbt", signed["psbt"]))["hex"]
            await asyncio.sleep(random.uniform(0, spread))
            sent = time.perf_counter()
            await rpc.call("sendrawtransaction", raw)
            while order_id not in detected:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), interval * 3 + 10)
            latencies.append(detected[order_id] - sent)
            print(f"  {label}: {order_id} detected after {latencies[-1] * 1000:.0f} ms", flush=True)
    finally:
        monitor.send_signal(signal.SIGTERM)
        await monitor.wait()
        reader.cancel()
    await rpc.call("generatetoaddress", 1, await rpc.call("getnewaddress", wallet="miner"))
    return latencies


async def main(payments: int, interval: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        node = RegtestNode(pathlib.Path(tmp) / "node", zmq_port=free_port())
        node.start()
        rpc = BitcoinRpc(node.url, user=node.user, password=node.password)
        try:
            await rpc.call("createwallet", "miner")
            await rpc.call("generatetoaddress", 110, await rpc.call("getnewaddress", wallet="miner"))
            base = {**os.environ, "KACCY_NETWORK": "regtest", "KACCY_BITCOIN_RPC_URL": node.url,
                    "KACCY_BITCOIN_RPC_USER": node.user, "KACCY_BITCOIN_RPC_PASSWORD": node.password,
                    "KACCY_DATA_DIR": tmp}
            results = {}
            for label, settings, poll_every, spread in (("zmq", {"KACCY_ZMQ": "auto"}, 60.0, 1.0),
                                                        ("interval", {"KACCY_ZMQ": "off"}, interval, interval)):
                env = {**base, **settings, "KACCY_XPUB": vpub(), "KACCY_DATABASE_URL": f"sqlite:///{tmp}/{label}.db",
                       "KACCY_BITCOIN_RPC_WALLET": f"watch-{label}-{uuid.uuid4().hex[:6]}"}
                results[label] = await measure(rpc, env, label, payments, poll_every, spread)
        finally:
            await rpc.close()
            node.stop()
    zmq, polled = results["zmq"], results["interval"]

    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"

    print_table([
        (f"sendrawtransaction -> payment_detected, ZMQ ({payments} payments, interval 60 s)", ms(zmq),
         f"interval only, {interval:g} s: {ms(polled)}", "median <= 500 ms"),
    ])


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
                     float(sys.argv[2]) if len(sys.argv) > 2 else 5.0))
