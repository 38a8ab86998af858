"""Several Bitcoin Core nodes behind one ChainBackend: fail-over, broadcast to all, one watch wallet.

Nodes come in the operator's order of preference. Calls go to the primary (domain/nodes.py:
the first node reachable, not lagging, not diverged). A node that refuses the connection,
times out or answers 5xx (the RPC client's `RpcConnectionError`; its clients here do not
retry; KACCY_PROXY unreachable is the proxy's failure, raised as it is) is marked down and the call goes to the next node at once: read calls and
`sendrawtransaction`, which is safe to repeat. A down node is probed again by the cross-check
after a back-off that doubles (1 s up to a minute).

Every node keeps the same watch wallet: `ensure_watching` imports on each reachable node. A
node that was down (or is seen for the first time) is brought up to date by the cross-check
before it is used again: each ranged descriptor another node watches further is imported
with the node's own timestamp of that descriptor (the rescan starts where its range stopped
growing), or from the genesis block for a descriptor it never had. Until that succeeds, and
until it has reached the highest tip, such a node is reported `lagging` and not used.

The cross-check runs at each monitor poll, and before a call when the last one is older
than `recheck` seconds (a command's first call checks the nodes first).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend, _same
from kaccy_bitcoin.adapters.bitcoin_core.errors import (
    BitcoinCoreError,
    NodeProxyUnreachable,
    RpcConnectionError,
    RpcError,
)
from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.chain import (
    BlockHeader,
    ChainInfo,
    FeeEstimate,
    MempoolAcceptance,
    MempoolEntry,
    MempoolInfo,
    NodeInfo,
    WalletHistory,
    WalletTransaction,
)
from kaccy_bitcoin.domain.errors import NodesDiverged
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.nodes import (
    DEFAULT_FORK_DEPTH,
    DEFAULT_MAX_LAG,
    NodeReport,
    NodeState,
    NodeStatus,
    NodeTip,
    check_height,
    classify,
    divergence_data,
)
from kaccy_bitcoin.domain.withdrawals import Utxo
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend, NodeSet

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 60.0


class PoolNode:
    """One node of the pool and what the pool last learnt of it."""

    def __init__(self, backend: BitcoinCoreBackend) -> None:
        self.backend = backend
        self.url = backend.rpc.url
        self.state = NodeState.DOWN
        self.status = NodeStatus(self.url, NodeState.DOWN)
        self.down_until = 0.0      # monotonic time before which it is not probed again
        self.backoff = 0.0
        self.wallet_current = False   # its watch wallet holds what the others hold
        self.rpc_seconds: float | None = None

    def mark_down(self, why: object) -> None:
        if self.state is not NodeState.DOWN:
            log.warning("bitcoin node %s is down (%s); using the next node", self.url, why)
        self.state = NodeState.DOWN
        self.status = NodeStatus(self.url, NodeState.DOWN)
        self.backoff = min(MAX_BACKOFF, self.backoff * 2 if self.backoff else FIRST_BACKOFF)
        self.down_until = time.monotonic() + self.backoff
        self.wallet_current = False
        self.backend._wallet_ready = False   # noqa: SLF001 - a node that restarted may have its wallet unloaded


class NodePool(ChainBackend, NodeSet):
    def __init__(self, backends: Sequence[BitcoinCoreBackend], max_lag: int = DEFAULT_MAX_LAG,
                 fork_depth: int = DEFAULT_FORK_DEPTH, recheck: float = 5.0) -> None:
        if not backends:
            raise ValueError("a node pool needs at least one node")
        self.nodes = [PoolNode(b) for b in backends]
        self._max_lag, self._fork_depth, self._recheck = max_lag, fork_depth, recheck
        self._checked_at: float | None = None
        self._report: NodeReport | None = None
        self._lock = asyncio.Lock()

    # -- the cross-check -------------------------------------------------------------------
    async def cross_check(self) -> NodeReport:
        async with self._lock:
            return await self._cross_check()

    async def _cross_check(self) -> NodeReport:
        now = time.monotonic()
        probed = [n for n in self.nodes if n.state is not NodeState.DOWN or now >= n.down_until]
        answers = await asyncio.gather(*(self._probe(n) for n in probed))
        statuses = dict(zip((id(n) for n in probed), answers))
        tips: list[NodeTip | None] = []
        for n in self.nodes:
            s = statuses.get(id(n))
            tips.append(NodeTip(s.height, s.best_block_hash) if s is not None and s.height is not None else None)
        height = check_height(tips, self._fork_depth)
        hashes = await asyncio.gather(*(self._hash_at(n, height) if t is not None else _none()
                                        for n, t in zip(self.nodes, tips)))
        verdict = classify(tips, hashes, self._max_lag)
        states = list(verdict.states)
        highest = max((t.height for t, s in zip(tips, states) if t is not None and s.usable), default=None)
        for i, n in enumerate(self.nodes):
            if states[i] is NodeState.DOWN:
                if n.state is not NodeState.DOWN:
                    n.mark_down("no answer to the cross-check")
                continue
            if states[i].usable and not n.wallet_current:
                # Back from down (or new to this process): its wallet first, and the whole chain.
                caught_up = tips[i].height == highest and await self._catch_up(n)   # type: ignore[union-attr]
                if not caught_up:
                    states[i] = NodeState.LAGGING
            n.backoff = 0.0
        first = True
        for i, s in enumerate(states):   # the first usable node is the primary
            if s.usable:
                states[i] = NodeState.PRIMARY if first else NodeState.STANDBY
                first = False
        for n, s, t in zip(self.nodes, states, tips):
            n.state = s
            old = statuses.get(id(n))
            n.status = NodeStatus(n.url, s, t.height if t else None, t.best_block_hash if t else None,
                                  old.latency_ms if old else None, old.version if old else None)
        report = NodeReport(tuple(n.status for n in self.nodes), verdict.diverged,
                            divergence_data([n.url for n in self.nodes], tips, hashes, height))
        self._report, self._checked_at = report, time.monotonic()
        return report

    async def _probe(self, n: PoolNode) -> NodeStatus | None:
        started = time.perf_counter()
        try:
            status = await n.backend.status(n.state)
        except NodeProxyUnreachable:
            raise   # the proxy, not the node: no node is marked down for it
        except BitcoinCoreError as exc:
            n.mark_down(exc)
            return None
        n.rpc_seconds = time.perf_counter() - started
        return status

    async def _hash_at(self, n: PoolNode, height: int | None) -> str | None:
        try:
            return await n.backend.rpc.call("getblockhash", height)
        except NodeProxyUnreachable:
            raise
        except BitcoinCoreError as exc:
            n.mark_down(exc)
            return None

    async def _catch_up(self, n: PoolNode) -> bool:
        """Import on `n` what the other reachable nodes' watch wallets watch beyond it."""
        others = [o for o in self.nodes if o is not n and o.state is not NodeState.DOWN]
        try:
            wanted: dict[str, tuple[str, int]] = {}
            for o in others:
                for d in await self._descriptors(o):
                    key = _same(d["desc"])
                    if "range" in d and int(d["range"][1]) > wanted.get(key, ("", -1))[1]:
                        wanted[key] = (d["desc"], int(d["range"][1]))
            await n.backend._ensure_wallet()
            mine = {_same(d["desc"]): d for d in await self._descriptors(n)}
            requests = []
            for key, (desc, end) in wanted.items():
                have = mine.get(key)
                if have is not None and int(have["range"][0]) <= 0 and int(have["range"][1]) >= end:
                    continue
                since = int(have["timestamp"]) if have is not None else 0
                requests.append({"desc": desc, "range": [0, max(end, int(have["range"][1]) if have else end)],
                                 "timestamp": since, "active": False})
            if requests:
                log.info("bringing the watch wallet of %s up to date: %d descriptor(s)", n.url, len(requests))
                results = await n.backend.rpc.call("importdescriptors", requests, wallet=n.backend.wallet)
                failed = [r.get("error") for r in results if not r.get("success")]
                if failed:
                    raise BitcoinCoreError(f"importdescriptors on {n.url} failed: {failed[0]}")
        except BitcoinCoreError as exc:
            log.warning("could not bring the watch wallet of %s up to date yet: %s", n.url, exc)
            if isinstance(exc, RpcConnectionError):
                n.mark_down(exc)
            return False
        n.wallet_current = True
        return True

    @staticmethod
    async def _descriptors(n: PoolNode) -> list[dict[str, Any]]:
        try:
            return (await n.backend.rpc.call("listdescriptors", wallet=n.backend.wallet))["descriptors"]
        except RpcError as err:
            if err.rpc_code == RpcError.WALLET_NOT_FOUND:
                return []
            raise

    async def _checked(self) -> NodeReport:
        if self._report is None or time.monotonic() - (self._checked_at or 0) > self._recheck:
            async with self._lock:
                if self._report is None or time.monotonic() - (self._checked_at or 0) > self._recheck:
                    return await self._cross_check()
        return self._report   # type: ignore[return-value]

    async def finality_held(self) -> bool:
        return (await self._checked()).diverged

    async def _agreed(self) -> None:
        if (await self._checked()).all_diverged:
            raise NodesDiverged("every Bitcoin node disagrees with the others on the chain "
                                "(see `kaccy-bitcoin nodes`): no withdrawal until they agree again")

    # -- routing -----------------------------------------------------------------------------
    def _order(self) -> list[PoolNode]:
        usable = [n for n in self.nodes if n.state.usable]
        usable.sort(key=lambda n: n.state is not NodeState.PRIMARY)
        if not usable:   # every node diverged or lagging: the first that answers
            usable = [n for n in self.nodes if n.state is not NodeState.DOWN]
        return usable or list(self.nodes)   # every node down: try them all the same

    async def _read(self, call: Callable[[BitcoinCoreBackend], Awaitable[T]]) -> T:
        await self._checked()
        failure: RpcConnectionError | None = None
        for n in self._order():
            started = time.perf_counter()
            try:
                result = await call(n.backend)
            except NodeProxyUnreachable:
                raise
            except RpcConnectionError as exc:
                n.mark_down(exc)
                failure = exc
                self._promote()
                continue
            n.rpc_seconds = time.perf_counter() - started
            return result
        raise failure or RpcConnectionError("no Bitcoin node answered")

    def _promote(self) -> None:
        """After a node went down between two cross-checks: the next usable one is primary."""
        first = True
        for n in self.nodes:
            if n.state.usable:
                n.state = NodeState.PRIMARY if first else NodeState.STANDBY
                first = False

    # -- ChainBackend --------------------------------------------------------------------------
    async def node_info(self) -> NodeInfo:
        return await self._read(lambda b: b.node_info())

    async def chain_info(self) -> ChainInfo:
        return await self._read(lambda b: b.chain_info())

    async def block_header(self, block_hash: str) -> BlockHeader:
        return await self._read(lambda b: b.block_header(block_hash))

    async def block_hash(self, height: int) -> str:
        return await self._read(lambda b: b.block_hash(height))

    async def raw_transaction(self, txid: Txid) -> bytes:
        return await self._read(lambda b: b.raw_transaction(txid))

    async def mempool_txids(self) -> set[Txid]:
        return await self._read(lambda b: b.mempool_txids())

    async def in_mempool(self, txids: Sequence[Txid]) -> set[Txid]:
        return await self._read(lambda b: b.in_mempool(txids))

    async def mempool_entry(self, txid: Txid) -> MempoolEntry | None:
        return await self._read(lambda b: b.mempool_entry(txid))

    async def mempool_entries(self, txids: Sequence[Txid]) -> dict[Txid, MempoolEntry | None]:
        return await self._read(lambda b: b.mempool_entries(txids))

    async def incremental_relay_fee(self) -> FeeRate:
        return await self._read(lambda b: b.incremental_relay_fee())

    async def mempool_info(self) -> MempoolInfo:
        return await self._read(lambda b: b.mempool_info())

    async def estimate_fee(self, target_blocks: int) -> FeeEstimate:
        return await self._read(lambda b: b.estimate_fee(target_blocks))

    async def ensure_watching(self, descriptors: Sequence[tuple[str, int]]) -> list[int]:
        served: list[BitcoinCoreBackend] = []

        async def first(b: BitcoinCoreBackend) -> list[int]:
            served.append(b)
            return await b.ensure_watching(descriptors)
        ends = await self._read(first)
        others = [n for n in self.nodes if n.backend is not served[-1] and n.state is not NodeState.DOWN]
        results = await asyncio.gather(*(n.backend.ensure_watching(descriptors) for n in others),
                                       return_exceptions=True)
        for n, result in zip(others, results):
            if isinstance(result, BaseException):
                log.warning("could not extend the watch wallet of %s (caught up later): %s", n.url, result)
                if isinstance(result, RpcConnectionError):
                    n.mark_down(result)
                n.wallet_current = False
                if not isinstance(result, Exception):
                    raise result
        return ends

    async def wallet_history(self, since_block: str | None, target_confirmations: int) -> WalletHistory:
        return await self._read(lambda b: b.wallet_history(since_block, target_confirmations))

    async def wallet_transactions(self, txids: Sequence[Txid]) -> dict[Txid, WalletTransaction | None]:
        return await self._read(lambda b: b.wallet_transactions(txids))

    async def wallet_synced(self) -> bool:
        return await self._read(lambda b: b.wallet_synced())

    async def unspent(self, min_confirmations: int = 0) -> list[Utxo]:
        await self._agreed()   # the coins to spend: no withdrawal is built while every node disagrees
        return await self._read(lambda b: b.unspent(min_confirmations))

    async def test_accept(self, raw_tx: bytes) -> MempoolAcceptance:
        return await self._read(lambda b: b.test_accept(raw_tx))

    async def broadcast(self, raw_tx: bytes) -> Txid:
        """To every reachable node at once; the answer of the first (in preference order) that
        accepted it, else the first refusal."""
        await self._agreed()
        targets = [n for n in self.nodes if n.state is not NodeState.DOWN] or list(self.nodes)
        results = await asyncio.gather(*(n.backend.broadcast(raw_tx) for n in targets), return_exceptions=True)
        refusal: BaseException | None = None
        txid: Txid | None = None
        for n, result in zip(targets, results):
            if isinstance(result, NodeProxyUnreachable):
                refusal = refusal or result
            elif isinstance(result, RpcConnectionError):
                n.mark_down(result)
            elif isinstance(result, BaseException):
                refusal = refusal or result
                log.info("bitcoin node %s did not take the transaction: %s", n.url, result)
            elif txid is None:
                txid = result
        if txid is not None:
            self._promote()
            return txid
        if refusal is not None:
            raise refusal
        raise RpcConnectionError("no Bitcoin node answered sendrawtransaction")

    async def close(self) -> None:
        for n in self.nodes:
            await n.backend.close()


async def _none() -> None:
    return None
