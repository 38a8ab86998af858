"""HTTP API load: order creation and order reads at a target rate, through `kaccy-bitcoin serve`.

Run: `BITCOIND=... .venv/bin/python bench/api_load.py [--rate 500] [--count 3000]`. Starts its own
regtest node, then for SQLite (and PostgreSQL when KACCY_TEST_DATABASE_URL is set; its kaccy_
tables are dropped first) a `serve` process (API only, no rate limit), and drives it from this
process with one aiohttp client: an open loop that starts request i at t0 + i / rate whatever
the answers (bounded by --count and --seconds), so a slow server shows as latency, not as a
lower offered rate. Latency is from the scheduled start to the last byte. Before measuring, 100
creations and 100 reads at 100/s warm the server up (not counted). Every creation carries
an Idempotency-Key, as the contract's clients send it (each a new key). The client collects no
garbage while it measures (its own pauses would read as server latency). `--profile DIR`
samples the server with py-spy (not a dependency) into collapsed stacks.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

import aiohttp
from bip_utils import Bip39MnemonicGenerator, Bip39SeedGenerator, Bip39WordsNum, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
from table import print_table  # noqa: E402 - bench/ is the script's own folder

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")


def vpub() -> str:
    seed = Bip39SeedGenerator(str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12))).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def drive(url: str, key: str, rate: float, count: int, seconds: float, make,  # noqa: ANN001
                idempotency: bool = True) -> dict:
    latencies: list[float] = []
    slow: list[float] = []   # when (s after the start) each request slower than 20 ms was due
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int, at: float) -> None:
            method, path, body = make(i)
            sent = headers
            if method == "POST" and idempotency:   # as the contract's clients send it
                sent = {**headers, "Idempotency-Key": f"{path}-{i}-{t0}"}
            try:
                async with session.request(method, url + path, data=body, headers=sent) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            latencies.append(time.perf_counter() - at)
            if latencies[-1] > 0.020:
                slow.append(at - t0)

        # The client's own garbage collections (tens of ms once it holds thousands of tasks)
        # would show as server latency: none while measuring, one after.
        gc.collect()
        gc.disable()
        t0 = time.perf_counter() + 0.1
        tasks = []
        for i in range(count):
            at = t0 + i / rate
            if at - t0 > seconds:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        _, unfinished = await asyncio.wait(tasks, timeout=seconds + 60)
        for task in unfinished:
            task.cancel()
        if unfinished:
            errors["unanswered"] = len(unfinished)
        elapsed = time.perf_counter() - t0
        gc.enable()
    by_second: dict[int, int] = {}
    for when in slow:
        by_second[int(when)] = by_second.get(int(when), 0) + 1
    return {"sent": len(tasks), "rps": len(latencies) / elapsed, "p50": percentile(latencies, 50) * 1000,
            "p99": percentile(latencies, 99) * 1000, "errors": errors, "slow_by_second": by_second}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the serve process and its API workers (Linux /proc)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0.0
    for p in [pid, *map(int, children)]:
        try:
            fields = pathlib.Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def start_service(env: dict[str, str], log: pathlib.Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([CLI, "serve", "--port", "0", "--no-monitor", "--no-webhooks", "--workers", str(workers)],
                            env=env,
                            stdout=subprocess.PIPE, stderr=open(log, "wb"))
    line = proc.stdout.readline().decode()
    if not line:
        raise SystemExit(f"serve did not start: {log.read_text()[-2000:]}")
    return proc, json.loads(line)["listening"]


async def bench_database(name: str, database_url: str, node: RegtestNode, tmp: pathlib.Path,
                         args: argparse.Namespace, rows: list) -> None:
    env = {**os.environ, "KACCY_NETWORK": "regtest", "KACCY_BITCOIN_RPC_URL": node.url,
           "KACCY_BITCOIN_RPC_USER": node.user, "KACCY_BITCOIN_RPC_PASSWORD": node.password,
           "KACCY_BITCOIN_RPC_WALLET": f"bench-{uuid.uuid4().hex[:8]}", "KACCY_XPUB": vpub(),
           "KACCY_DATA_DIR": str(tmp), "KACCY_DATABASE_URL": database_url, "KACCY_API_RATE_LIMIT": "0",
           "KACCY_LOG_LEVEL": "warning", "KACCY_GAP_LIMIT": str(args.gap_limit)}
    key = json.loads(subprocess.run([CLI, "apikey", "create", "--scope", "orders", "--scope", "read"], env=env,
                                    capture_output=True, text=True, check=True).stdout)["key"]
    proc, url = start_service(env, tmp / f"serve-{name}.log", args.workers)
    try:
        run = uuid.uuid4().hex[:6]

        def create(i: int):  # noqa: ANN202
            return "POST", "/v1/orders", json.dumps({"order_id": f"b-{run}-{i}", "amount_sat": 10_000 + i})

        def read(i: int):  # noqa: ANN202
            return "GET", f"/v1/orders/b-{run}-{i % created['sent']}", None

        await drive(url, key, 50, 50, 5, lambda i: ("GET", "/health", None))   # warm up the connection pool
        # Warm up the server too: a started process compiles each SQL statement on its first
        # use (5-10 ms on the first order). 100 orders and 100 reads at 100/s, not measured.
        await drive(url, key, 100, 100, 5, lambda i: ("POST", "/v1/orders",
                                                      json.dumps({"order_id": f"w-{run}-{i}", "amount_sat": 1_000})))
        await drive(url, key, 100, 100, 5, lambda i: ("GET", f"/v1/orders/w-{run}-{i}", None))
        results = []
        for what, make in (("GET /health", lambda i: ("GET", "/health", None)), ("order create", create),
                           ("order read", read)):
            cpu = cpu_seconds(proc.pid)
            spy = None
            if args.profile:   # py-spy (not a dependency: pip install py-spy) samples the server meanwhile
                out = pathlib.Path(args.profile) / f"{name}-{what.replace(' ', '-').replace('/', '')}.txt"
                spy = subprocess.Popen(["py-spy", "record", "-p", str(proc.pid), "-r", "250", "--format", "raw",
                                        "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await asyncio.sleep(1)
            r = await drive(url, key, args.rate, args.count, args.seconds, make)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            r["cpu_ms"] = (cpu_seconds(proc.pid) - cpu) / max(1, r["sent"]) * 1000
            results.append((what, r))
            if what == "order create":
                created = r
        load = os.getloadavg()[0]
        for what, r in results:
            figure = f"{r['rps']:.0f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms"
            if r["errors"]:
                figure += f", errors {r['errors']}"
            rows.append((f"{what} at {args.rate:g}/s ({name}, {args.workers} API process(es), {r['sent']} requests)",
                         figure, f"server CPU {r['cpu_ms']:.2f} ms/request; load average {load:.1f}",
                         "p99 < 20 ms" if what != "GET /health" else ""))
            print(f"  measured: {rows[-1][0]}: {figure}; requests over 20 ms by second of the run: "
                  f"{r['slow_by_second']}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--workers", type=int, default=2, help="API processes (serve --workers)")
    p.add_argument("--profile", metavar="DIR", help="record each phase with py-spy into DIR (collapsed stacks)")
    p.add_argument("--gap-limit", type=int, default=10_000,
                   help="KACCY_GAP_LIMIT of the service (a service creating 500 orders a second keeps about "
                        "20 s of them unpaid; with 1000 the node's watch range is widened during the run)")
    p.add_argument("--only", choices=("sqlite", "postgresql"), help="bench one database only")
    args = p.parse_args()
    rows: list = []
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        node = RegtestNode(tmp / "node")
        node.start()
        try:
            if args.only != "postgresql":
                await bench_database("SQLite", f"sqlite:///{tmp}/bench.db", node, tmp, args, rows)
            pg = os.environ.get("KACCY_TEST_DATABASE_URL")
            if pg and args.only != "sqlite":
                from sqlalchemy import MetaData

                from kaccy_bitcoin.adapters.sql.storage import make_engine

                engine = make_engine(pg, check_schema=False)
                found = MetaData()
                found.reflect(engine, only=lambda n, _: n.startswith("kaccy_"))
                found.drop_all(engine)
                engine.dispose()
                await bench_database("PostgreSQL", pg, node, tmp, args, rows)
        finally:
            node.stop()
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
