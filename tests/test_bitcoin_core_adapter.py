"""The Bitcoin Core adapter against the real regtest node."""
from __future__ import annotations

import asyncio
import time

import pytest

from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend
from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcAuthError, RpcConnectionError, RpcError
from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode, free_port
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.domain.bitcoin import Network, Txid
from kaccy_bitcoin.domain.money import Satoshis

pytestmark = pytest.mark.node


async def test_node_chain_blocks_and_cache(node) -> None:
    backend = BitcoinCoreBackend(node.rpc, wallet="miner")
    info = await backend.node_info()
    assert info.version >= 250000 and "Satoshi" in info.subversion or "Knots" in info.subversion
    chain = await backend.chain_info()
    assert chain.chain == "regtest" and chain.blocks >= 101
    tip = await backend.block_hash(chain.blocks)
    header = await backend.block_header(tip)
    assert (header.hash, header.height) == (tip, chain.blocks)
    parent = await backend.block_header(header.previous_hash)
    assert parent.height == chain.blocks - 1
    before = dict(backend.cache.stats)
    assert await backend.block_header(tip) == header
    assert backend.cache.stats["immutable_hits"] == before["immutable_hits"] + 1
    deep = await backend.block_hash(1)
    assert await backend.block_hash(1) == deep


async def test_transactions_mempool_and_fees(node) -> None:
    backend = BitcoinCoreBackend(node.rpc, wallet="miner")
    address = await node.call("getnewaddress", wallet="miner")
    txid = Txid(await node.send(address, 50_000))
    assert txid in await backend.mempool_txids()
    raw = await backend.raw_transaction(txid)
    decoded = await node.call("decoderawtransaction", raw.hex())
    assert decoded["txid"] == txid.value
    info = await backend.mempool_info()
    assert info.size >= 1 and info.min_fee.sat_per_kvb >= 0
    estimate = await backend.estimate_fee(6)
    # A node with too few blocks of transactions has no estimate ("Insufficient data or no feerate
    # found"); the session node may have seen enough of them by now (tests share it, in any order).
    raw_estimate = await node.call("estimatesmartfee", 6)
    if "feerate" in raw_estimate:
        assert estimate.rate is not None and estimate.rate.sat_per_kvb == round(raw_estimate["feerate"] * 10**8)
    else:
        assert estimate.rate is None and estimate.errors
    await node.mine(1)
    assert txid not in await backend.mempool_txids()
    accept = await backend.test_accept(raw)
    assert not accept.allowed and accept.reject_reason


async def test_in_mempool_answers_alike_whether_it_lists_the_mempool_or_asks_per_txid(node) -> None:
    backend = BitcoinCoreBackend(node.rpc, wallet="miner")
    address = await node.call("getnewaddress", wallet="miner")
    sent = [Txid(await node.send(address, 20_000 + i)) for i in range(12)]
    absent = Txid("00" * 32)
    # One txid against a mempool of twelve: asked per txid (getmempoolentry).
    assert await backend.in_mempool([sent[0]]) == {sent[0]}
    assert await backend.in_mempool([absent]) == set()
    # Thirteen txids: the mempool is listed once (getrawmempool).
    assert await backend.in_mempool([*sent, absent]) == set(sent)
    await node.mine(1)
    assert await backend.in_mempool([sent[0]]) == set()
    assert await backend.in_mempool(sent) == set()


async def test_batch_equals_single_calls_and_keeps_per_call_errors(node) -> None:
    heights = list(range(0, 20))
    single = [await node.rpc.call("getblockhash", h) for h in heights]
    requests_before = node.rpc.stats["requests"]
    batched = await node.rpc.batch([("getblockhash", [h]) for h in heights] + [("getblockhash", [10**6])])
    assert node.rpc.stats["requests"] == requests_before + 1
    assert batched[:-1] == single
    assert isinstance(batched[-1], RpcError) and batched[-1].rpc_code == -8


async def test_rpc_errors_are_typed_and_not_retried(node) -> None:
    retries = node.rpc.stats["retries"]
    with pytest.raises(RpcError) as err:
        await node.rpc.call("getblockheader", "00" * 32)
    assert err.value.rpc_code == -5 and "not found" in err.value.rpc_message.lower()
    with pytest.raises(RpcError) as err:
        await node.rpc.call("no_such_method")
    assert err.value.rpc_code == -32601
    assert node.rpc.stats["retries"] == retries


async def test_wrong_credentials_and_unreachable_node(node) -> None:
    bad = BitcoinRpc(node.node.url, user="kaccy", password="wrong")
    with pytest.raises(RpcAuthError):
        await bad.call("getblockcount")
    await bad.close()
    nowhere = BitcoinRpc(f"http://127.0.0.1:{free_port()}", user="u", password="p", retries=2, backoff=0.01)
    with pytest.raises(RpcConnectionError, match="gave up after 3 attempts"):
        await nowhere.call("getblockcount")
    await nowhere.close()


async def test_cookie_auth_and_reconnect_after_node_restart(tmp_path) -> None:
    node = RegtestNode(tmp_path / "restart", user="", password="")
    node.start()
    try:
        cookie = node.datadir / "regtest" / ".cookie"
        rpc = BitcoinRpc(node.url, cookie_file=str(cookie), retries=8, backoff=0.1)
        assert await rpc.call("getblockcount") == 0
        old_cookie = cookie.read_text()
        node.stop()
        restart = asyncio.get_running_loop().run_in_executor(None, lambda: (time.sleep(0.5), node.start()))
        # The call starts while the node is down: connection errors and warm-up are retried,
        # and the new cookie the restarted node wrote is picked up.
        assert await rpc.call("getblockcount") == 0
        await restart
        assert cookie.read_text() != old_cookie
        assert rpc.stats["retries"] >= 1
        await rpc.close()
    finally:
        node.stop()


async def test_watch_wallet_is_created_watch_only(node) -> None:
    _, vpub = node.fresh_vpub()
    descriptor = Bip32AddressDeriver(vpub, Network.REGTEST).descriptor(0)
    backend = BitcoinCoreBackend(node.rpc, wallet=f"watch-{vpub[-8:]}")
    await backend.ensure_watching([(descriptor, 30)])
    info = await node.call("getwalletinfo", wallet=backend.wallet)
    assert info["private_keys_enabled"] is False and info["descriptors"] is True
    # The node tops any ranged descriptor up to its keypool (1000 by default), so the range
    # is at least what we asked for; past the keypool it follows our request exactly.
    descs = await node.call("listdescriptors", wallet=backend.wallet)
    assert descs["descriptors"][0]["range"][1] >= 30
    await backend.ensure_watching([(descriptor, 1500)])
    await backend.ensure_watching([(descriptor, 1500)])  # idempotent
    descs = await node.call("listdescriptors", wallet=backend.wallet)
    assert len(descs["descriptors"]) == 1 and descs["descriptors"][0]["range"][1] >= 1500
    assert Satoshis(0) == Satoshis.from_btc((await node.call("getbalances", wallet=backend.wallet))
                                            ["mine"]["trusted"])


async def test_wallet_synced_compares_the_wallets_last_processed_block_with_the_tip(node) -> None:
    backend = BitcoinCoreBackend(node.rpc, wallet="miner")
    await node.mine(1)
    info = await node.call("getwalletinfo", wallet="miner")
    assert "lastprocessedblock" in info           # this node says it: the check is live, not skipped
    assert await backend.wallet_synced()
    real = backend.rpc.batch

    async def a_block_behind(calls, wallet=None):  # noqa: ANN001, ANN202 - the moment before the wallet takes a block in
        best, winfo = await real(calls, wallet=wallet)
        return ["00" * 32, winfo]

    backend.rpc.batch = a_block_behind
    try:
        assert not await backend.wallet_synced()
    finally:
        backend.rpc.batch = real
