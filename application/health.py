"""Readiness: each dependency checked on its own, with its status and how long it took."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from kaccy_bitcoin.application.monitor import CURSOR
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend, NodeSet
from kaccy_bitcoin.ports.service_store import ServiceStore
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory


async def _timed(check: Callable[[], Awaitable[dict[str, Any]]], timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), timeout)
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, not raised
        result = {"status": "fail", "error": f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


class CheckReadiness:
    """`{"status": "ok"|"fail", "checks": {name: {"status", "latency_ms", ...}}}`: the node
    reachable and synced, with several nodes their agreement on the chain (`nodes`), LND (when configured) answering GetInfo and synced to the chain, the
    database writable, the payment monitor at most `max_lag_blocks` behind the tip."""

    def __init__(self, chain: ChainBackend, uow: UnitOfWorkFactory, store: ServiceStore,
                 lightning: Callable[[], Awaitable[Any]] | None = None, max_lag_blocks: int = 2,
                 final_confirmations: int = 1, timeout: float = 5.0, nodes: NodeSet | None = None) -> None:
        self._nodes = nodes   # several Bitcoin nodes: the `nodes` check fails while they disagree
        self._chain = chain
        self._uow = uow
        self._store = store
        self._lightning = lightning
        self._max_lag = max_lag_blocks
        # The monitor's cursor stays this many blocks below the tip on purpose (it reads those
        # again each poll, to see reorgs): that is not lag.
        self._cursor_depth = max(0, final_confirmations - 1)
        self._timeout = timeout

    async def __call__(self) -> dict[str, Any]:
        checks = {"bitcoind": await _timed(self._bitcoind, self._timeout),
                  "database": await _timed(self._database, self._timeout),
                  "monitor": await _timed(self._monitor, self._timeout)}
        if self._nodes is not None:
            checks["nodes"] = await _timed(self._node_agreement, self._timeout)
        if self._lightning is not None:
            checks["lnd"] = await _timed(self._lnd, self._timeout)
        ok = all(c["status"] == "ok" for c in checks.values())
        return {"status": "ok" if ok else "fail", "checks": checks}

    async def _bitcoind(self) -> dict[str, Any]:
        info = await self._chain.chain_info()
        synced = not info.initial_block_download
        peers = (await self._chain.node_info()).connections
        return {"status": "ok" if synced else "fail", "chain": info.chain, "blocks": info.blocks, "synced": synced,
                "peers": peers}

    async def _node_agreement(self) -> dict[str, Any]:
        report = await self._nodes.cross_check()   # type: ignore[union-attr] - only with several nodes
        result: dict[str, Any] = {"status": "fail" if report.diverged else "ok", **report.to_dict()}
        if report.diverged:
            result["error"] = "the Bitcoin nodes disagree on the chain: nothing is finalized until they agree"
        return result

    async def _database(self) -> dict[str, Any]:
        # In a thread, waiting for the write lock half the check's time at most: a database
        # another process is writing to is reported busy (database_busy), not timed out.
        await asyncio.to_thread(self._store.check_writable, self._timeout / 2)
        return {"status": "ok"}

    async def monitor_lag(self) -> int | None:
        """Blocks between the node's tip and the end of the monitor's last committed poll."""
        with self._uow.read() as uow:
            cursor = uow.cursors.get(CURSOR)
        if cursor is None or not cursor.block_hash:
            return None
        tip = (await self._chain.chain_info()).blocks
        behind = tip - (await self._chain.block_header(cursor.block_hash)).height
        return max(0, behind - self._cursor_depth)

    async def _monitor(self) -> dict[str, Any]:
        lag = await self.monitor_lag()
        if lag is None:
            return {"status": "fail", "lag_blocks": None, "error": "the monitor has not completed a poll yet"}
        return {"status": "ok" if lag <= self._max_lag else "fail", "lag_blocks": lag}

    async def _lnd(self) -> dict[str, Any]:
        node = await self._lightning()   # type: ignore[misc] - only called when configured
        info = await node.node_info()
        report = {"status": "ok" if info.synced_to_chain else "fail", "synced_to_chain": info.synced_to_chain,
                  "block_height": info.block_height, "active_channels": info.active_channels}
        if not info.synced_to_chain:
            report["error"] = f"LND is not synced to the chain yet (at block {info.block_height})"
        return report
