"""Several Bitcoin nodes, end to end: the session's regtest node (A) and a second one (B) of this
module, connected to each other, B first in preference. `serve` and the CLI run as their own
processes with KACCY_BITCOIN_RPC_URL listing both. B is killed with SIGKILL while orders are
made and paid, then started again; then the two are partitioned and mine different chains."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess

import aiohttp
import pytest

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from tests.payments_harness import CLI, Shop
from tests.service_harness import Client, Service, api_key, service_env, until

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def node_b(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    b = RegtestNode(tmp_path_factory.mktemp("bitcoind-b"))
    b.extra_args = ("-listen=1", f"-bind=127.0.0.1:{b.p2p_port}")
    b.start()
    yield b
    b.stop()


async def connected(node, b: RegtestNode) -> BitcoinRpc:  # noqa: ANN001
    """B running, connected to A (A dials B: the session node does not listen) and at A's tip."""
    if b.process is None or b.process.poll() is not None:
        b.start()
    rpc = BitcoinRpc(b.url, user=b.user, password=b.password)
    await rpc.call("setnetworkactive", True)
    await node.call("addnode", f"127.0.0.1:{b.p2p_port}", "onetry")

    async def synced() -> bool:
        return await rpc.call("getbestblockhash") == await node.call("getbestblockhash")
    await until(synced, timeout=60)
    return rpc


def nodes_cli(env: dict[str, str]) -> tuple[int, dict]:
    import json

    proc = subprocess.run([CLI, "nodes"], env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


async def events(c: Client, kind: str, subject: str | None = None) -> list[dict]:
    status, page = await c.get("/v1/events?after=0&limit=500")
    assert status == 200, page
    return [e for e in page["events"] if e["kind"] == kind and (subject is None or e["subject"] == subject)]


@contextlib.asynccontextmanager
async def two_node_shop(node, node_b, tmp_path, **settings: str):  # noqa: ANN001, ANN201
    """A shop whose `serve` (monitor every 0.3 s) and CLI use B, then A."""
    rpc_b = await connected(node, node_b)
    shop = Shop(node, tmp_path, KACCY_BITCOIN_RPC_URL=f"{node_b.url},{node.node.url}", KACCY_ZMQ="off", **settings)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    env = service_env(shop.env)
    key = api_key(env, "read", "orders")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            yield shop, Client(session, service.url, key), rpc_b
    finally:
        service.stop()
        await rpc_b.close()


async def test_the_primary_killed_while_orders_are_made_and_paid(node, node_b, tmp_path) -> None:  # noqa: ANN001
    async with two_node_shop(node, node_b, tmp_path, KACCY_CONFIRMATIONS="1,2,3") as (shop, c, rpc_b):
        await _kill_and_restart(node, node_b, shop, c)


async def _kill_and_restart(node, node_b: RegtestNode, shop: Shop, c: Client) -> None:  # noqa: ANN001
    status, shown = await c.get("/v1/nodes")
    assert status == 200 and [n["state"] for n in shown["nodes"]] == ["primary", "standby"], shown
    assert shown["nodes"][0]["url"] == node_b.url and all(n["version"] and n["height"] for n in shown["nodes"])
    assert set(shown["nodes"][0]) == {"url", "state", "height", "best_block_hash", "latency_ms", "version"}

    # Orders made by the CLI (a new process each) and by `serve` (its pool knew B as primary).
    orders = {"n1": shop.order("n1", 60_000), "n2": await _order(c, "n2", 61_000)}
    await node.send(orders["n1"]["address"], 60_000)
    node_b.kill()   # SIGKILL: no goodbye to anyone
    orders["n3"] = await _order(c, "n3", 62_000)
    orders["n4"] = shop.order("n4", 63_000)
    for order_id in ("n2", "n3", "n4"):
        await node.send(orders[order_id]["address"], orders[order_id]["amount_sat"])
    status, seen = await c.get("/v1/nodes")
    assert status == 200 and [n["state"] for n in seen["nodes"]] == ["down", "primary"], seen
    assert seen["nodes"][0]["height"] is None and "@" not in seen["nodes"][0]["url"]
    await node.mine(3)

    async def finalized() -> bool:
        for order_id in orders:
            _, view = await c.get(f"/v1/orders/{order_id}")
            if view["status"] != "finalized":
                return False
        return True
    await until(finalized, timeout=60)
    for order_id in orders:
        assert len(await events(c, "payment_detected", order_id)) == 1
        assert len(await events(c, "payment_finalized", order_id)) == 1

    dest = await node.call("getnewaddress", wallet="miner")
    wid = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "100000", "--fee-rate", "3")[1]["withdrawal_id"]
    shop.cli("withdraw", "sign", wid, "--signer", "software")
    sent = shop.cli("withdraw", "broadcast", wid)[1]
    assert sent["state"] == "broadcast" and sent["txid"] in await node.call("getrawmempool")

    # B comes back: it catches up (blocks from A, its watch wallet from A's) and is primary again.
    rpc_b = await connected(node, node_b)
    rc, shown = nodes_cli(shop.env)
    assert rc == 0 and [n["state"] for n in shown["nodes"]] == ["primary", "standby"], shown
    wallet = shop.env["KACCY_BITCOIN_RPC_WALLET"]
    for order_id in ("n3", "n4"):   # made and paid while B was down: B's wallet has them now
        received = await rpc_b.call("getreceivedbyaddress", orders[order_id]["address"], 1, wallet=wallet)
        assert received * 100_000_000 == orders[order_id]["amount_sat"]
    await rpc_b.close()
    assert len(await events(c, "payment_detected")) == 4


async def test_partitioned_nodes_diverge_hold_finality_and_converge(node, node_b, tmp_path) -> None:  # noqa: ANN001
    # Fork depth 2: the hashes compared are 2 below the lower tip, so the nodes are seen to
    # diverge once each has mined 3 blocks of its own; finality (6) is out of reach until then.
    async with two_node_shop(node, node_b, tmp_path, KACCY_CONFIRMATIONS="1,2,6",
                             KACCY_NODE_FORK_DEPTH="2") as (shop, c, rpc_b):
        await _partition(node, node_b, shop, c, rpc_b)


async def _partition(node, node_b: RegtestNode, shop: Shop, c: Client, rpc_b: BitcoinRpc) -> None:  # noqa: ANN001
    order = shop.order("p1", 80_000)
    await node.send(order["address"], 80_000)
    await node.mine(1)

    async def confirmed() -> bool:
        _, view = await c.get("/v1/orders/p1")
        return view["status"] == "confirmed"
    await until(confirmed, timeout=30)

    await rpc_b.call("setnetworkactive", False)
    await until(lambda: _no_peers(rpc_b))
    # Each side its own chain, one block at a time. Until each has 3 blocks of its own the
    # compared hashes (2 below the lower tip) agree: the monitor is let see every step of those.
    # (B mines to another address: the same empty block on the same parent in the same second
    # would be the same block on both sides.)
    b_miner = await node.call("getnewaddress", wallet="miner")
    for k in range(1, 9):
        await rpc_b.call("generatetoaddress", 1, b_miner)
        await node.mine(1)
        if k < 3:
            await until(lambda: _depth(c, "p1", k + 1))
    await node.mine(1)   # A's chain the longer: B takes it when they meet again

    diverged = await until(lambda: events(c, "node_divergence"), timeout=30)
    assert len(diverged) == 1
    detail = diverged[0]
    assert [n["url"] for n in detail["nodes"]] == [node_b.url, node.node.url]
    assert detail["nodes"][0]["hash"] != detail["nodes"][1]["hash"] and detail["check_height"] > 0
    status, ready = await c.get("/ready")
    assert status == 503 and ready["checks"]["nodes"]["status"] == "fail", ready
    rc, shown = nodes_cli(shop.env)
    assert [n["state"] for n in shown["nodes"]] == ["diverged", "diverged"], shown
    dest = await node.call("getnewaddress", wallet="miner")
    rc, refused = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "10000", "--fee-rate", "3",
                           check=False)
    assert rc == 1 and refused["error"]["code"] == "nodes_diverged", refused
    await asyncio.sleep(1.0)   # more monitor rounds (0.3 s) with 8 blocks on each side: nothing final
    _, view = await c.get("/v1/orders/p1")
    assert view["status"] != "finalized" and not await events(c, "payment_finalized", "p1"), view

    await connected(node, node_b)   # B takes A's longer chain
    await until(lambda: events(c, "node_converged"), timeout=30)
    await node.mine(1)

    async def finalized() -> bool:
        _, view = await c.get("/v1/orders/p1")
        return view["status"] == "finalized"
    await until(finalized, timeout=30)
    status, ready = await c.get("/ready")
    assert ready["checks"]["nodes"]["status"] == "ok", ready
    for kind in ("payment_detected", "payment_finalized"):
        assert len(await events(c, kind, "p1")) == 1
    assert len(await events(c, "node_divergence")) == 1 and len(await events(c, "node_converged")) == 1
    metrics = await c.session.get(c.url + "/metrics")
    text = await metrics.text()
    assert f'kaccy_bitcoin_node_up{{url="{node_b.url}"}} 1.0' in text and "kaccy_bitcoin_node_height" in text


async def _order(c: Client, order_id: str, amount_sat: int) -> dict:
    status, created = await c.post("/v1/orders", {"order_id": order_id, "amount_sat": amount_sat})
    assert status == 201, created
    return created


async def _depth(c: Client, order_id: str, confirmations: int) -> bool:
    _, view = await c.get(f"/v1/orders/{order_id}")
    return view["confirmations"] == confirmations


async def _no_peers(rpc: BitcoinRpc) -> bool:
    return (await rpc.call("getnetworkinfo"))["connections"] == 0



async def test_one_node_is_the_primary_and_the_facade_agrees(node, tmp_path) -> None:  # noqa: ANN001
    from kaccy_bitcoin import KaccyBitcoin

    shop = Shop(node, tmp_path)
    rc, shown = nodes_cli(shop.env)
    tip = await node.call("getbestblockhash")
    assert rc == 0 and len(shown["nodes"]) == 1, shown
    assert {k: shown["nodes"][0][k] for k in ("url", "state", "best_block_hash")} == {
        "url": node.node.url, "state": "primary", "best_block_hash": tip}
    async with KaccyBitcoin.from_env({k: v for k, v in shop.env.items() if k.startswith("KACCY_")}) as kaccy:
        embedded = await kaccy.nodes()
    assert [n["state"] for n in embedded["nodes"]] == ["primary"] and embedded["nodes"][0]["height"] > 0
