"""ChainBackend over Bitcoin Core RPC: translates Core's JSON into domain records.

The watch-only descriptor wallet (`kaccy-watch` by default) is created on first use
and holds public descriptors only. BTC amounts are parsed from JSON as Decimal.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections import OrderedDict
import time
from decimal import Decimal
from typing import Any, Sequence

from kaccy_bitcoin.adapters.bitcoin_core.cache import TieredCache
from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError, RpcConnectionError, RpcError
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.chain import (
    BlockHeader,
    ChainInfo,
    Direction,
    FeeEstimate,
    MempoolAcceptance,
    MempoolEntry,
    MempoolInfo,
    NodeInfo,
    WalletEntry,
    WalletHistory,
    WalletTransaction,
)
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.withdrawals import Utxo
from kaccy_bitcoin.domain.nodes import NodeReport, NodeState, NodeStatus
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend, NodeSet

log = logging.getLogger(__name__)
_ORIGIN = re.compile(r"\[[0-9a-fA-F]{8}((?:/\d+['h]?)*)\]")
DEEP = 100  # blocks; below this depth a height's hash may still change
OWN_OUTPUTS_KEPT = 10_000   # spending transactions whose own outputs are remembered
WATCH_PATIENCE = 60.0  # seconds other processes' imports or a rescan may keep the watch wallet busy
_RPC_WALLET_ERROR = -4  # Core's RPC_WALLET_ERROR, e.g. "Wallet is currently rescanning"
_WALLET_BUSY = re.compile(r"already loading|exclusive lock")  # another caller is creating or loading it


def _sat(value: Any) -> Satoshis:
    return Satoshis.from_btc(abs(Decimal(value)))


def _same(descriptor: str) -> str:
    """A descriptor without its checksum and with one hardened marker: the node lists what it
    imported in its own spelling (84h where getdescriptorinfo kept 84'). A ' is nothing but a
    hardened marker in a descriptor (base58 keys have none), so h stands for it safely."""
    return descriptor.split("#", 1)[0].replace("'", "h")


def _covers(watched: tuple[int, int] | None, end: int) -> bool:
    return watched is not None and watched[0] <= 0 and watched[1] >= end


def _txids(values: Sequence[str] | None) -> tuple[Txid, ...]:
    return tuple(Txid(v) for v in values or ())


FULL_RBF_ALWAYS_SINCE = 280000   # Core 28: full-RBF by default (29: always); getnetworkinfo's version


class BitcoinCoreBackend(ChainBackend, NodeSet):
    def __init__(self, rpc: BitcoinRpc, wallet: str = "kaccy-watch", cache: TieredCache | None = None) -> None:
        self.rpc = rpc
        self.wallet = wallet
        self.cache = cache or TieredCache()
        self._wallet_ready = False
        self._descriptor_forms: dict[str, str] = {}
        # txid -> our outputs the node leaves out of a spending transaction's details (a
        # transaction's outputs never change, nor does the wallet stop owning an address).
        self._own: OrderedDict[Txid, list[dict[str, Any]]] = OrderedDict()

    # -- node --------------------------------------------------------------------
    async def node_info(self) -> NodeInfo:
        r = await self.rpc.call("getnetworkinfo")
        return NodeInfo(int(r["version"]), r["subversion"], int(r["connections"]))

    async def chain_info(self) -> ChainInfo:
        r = await self.rpc.call("getblockchaininfo")
        return ChainInfo(r["chain"], int(r["blocks"]), r["bestblockhash"], bool(r["initialblockdownload"]))

    async def block_header(self, block_hash: str) -> BlockHeader:
        key = ("header", block_hash)
        cached = self.cache.get_immutable(key)
        if not self.cache.missing(cached):
            return cached
        r = await self.rpc.call("getblockheader", block_hash, True)
        header = BlockHeader(r["hash"], int(r["height"]), r.get("previousblockhash"), int(r["time"]))
        self.cache.put_immutable(key, header)
        return header

    async def block_hash(self, height: int) -> str:
        key = ("hash", height)
        cached = self.cache.get_immutable(key)
        if self.cache.missing(cached):
            cached = self.cache.get_ttl(key)
        if not self.cache.missing(cached):
            return cached
        block_hash, tip = await self._batch([("getblockhash", [height]), ("getblockcount", [])])
        if tip - height >= DEEP:
            self.cache.put_immutable(key, block_hash)
        else:
            self.cache.put_ttl(key, block_hash, 1.0)
        return block_hash

    async def raw_transaction(self, txid: Txid) -> bytes:
        key = ("rawtx", txid.value)
        cached = self.cache.get_immutable(key)
        if not self.cache.missing(cached):
            return cached
        try:
            hex_tx = await self.rpc.call("getrawtransaction", txid.value, False)
        except RpcError as err:
            if err.rpc_code != RpcError.INVALID_ADDRESS_OR_KEY:
                raise
            await self._ensure_wallet()
            hex_tx = (await self.rpc.call("gettransaction", txid.value, True, wallet=self.wallet))["hex"]
        raw = bytes.fromhex(hex_tx)
        self.cache.put_immutable(key, raw)  # a txid names exactly one serialization's non-witness data
        return raw

    async def mempool_txids(self) -> set[Txid]:
        return {Txid(t) for t in await self.rpc.call("getrawmempool")}

    async def in_mempool(self, txids: Sequence[Txid]) -> set[Txid]:
        if not txids:
            return set()
        # One getmempoolentry costs about as much as listing ten txids of getrawmempool, so a
        # mempool up to ten times the question's size is listed whole; a big one is asked per txid.
        size = (await self.rpc.call("getmempoolinfo"))["size"]
        if size <= 10 * len(txids):
            pool = set(await self.rpc.call("getrawmempool"))
            return {t for t in txids if t.value in pool}
        entries = await self.rpc.batch([("getmempoolentry", [t.value]) for t in txids])
        found = set()
        for txid, entry in zip(txids, entries):
            if not isinstance(entry, RpcError):
                found.add(txid)
            elif entry.rpc_code != RpcError.INVALID_ADDRESS_OR_KEY:
                raise entry
        return found

    async def mempool_entry(self, txid: Txid) -> MempoolEntry | None:
        try:
            r = await self.rpc.call("getmempoolentry", txid.value)
        except RpcError as err:
            if err.rpc_code == RpcError.INVALID_ADDRESS_OR_KEY:
                return None
            raise
        return self._mempool_entry(txid, r)

    async def mempool_entries(self, txids: Sequence[Txid]) -> dict[Txid, MempoolEntry | None]:
        if not txids:
            return {}
        replies = await self.rpc.batch([("getmempoolentry", [t.value]) for t in txids])
        found: dict[Txid, MempoolEntry | None] = {}
        for txid, reply in zip(txids, replies):
            if isinstance(reply, RpcError):
                if reply.rpc_code != RpcError.INVALID_ADDRESS_OR_KEY:
                    raise reply
                found[txid] = None
            else:
                found[txid] = self._mempool_entry(txid, reply)
        return found

    @staticmethod
    def _mempool_entry(txid: Txid, r: dict[str, Any]) -> MempoolEntry:
        fees = r["fees"]
        return MempoolEntry(txid, int(r["vsize"]), _sat(fees["base"]), _sat(fees["descendant"]),
                            int(r["descendantsize"]), int(r.get("time", 0)),
                            replaceable=bool(r.get("bip125-replaceable", False)),
                            ancestor_count=int(r.get("ancestorcount", 1)), ancestor_vsize=int(r.get("ancestorsize", 0)),
                            ancestor_fees=_sat(fees.get("ancestor", 0)))

    async def incremental_relay_fee(self) -> FeeRate:
        cached = self.cache.get_ttl("incrementalfee")
        if self.cache.missing(cached):
            cached = FeeRate.from_btc_per_kvb((await self.rpc.call("getnetworkinfo"))["incrementalfee"])
            self.cache.put_ttl("incrementalfee", cached, 60.0)
        return cached

    async def mempool_info(self) -> MempoolInfo:
        cached = self.cache.get_ttl("mempoolinfo")
        if not self.cache.missing(cached):
            return cached
        r = await self.rpc.call("getmempoolinfo")
        # `fullrbf` from Core 24 (true by default since 28, as in Knots). Core 29 removed the
        # option (full-RBF always) and later Cores leave the field out unless -deprecatedrpc=fullrbf:
        # a node that does not say relays full-RBF from version 28, only BIP125 signals before.
        if "fullrbf" in r:
            full_rbf = bool(r["fullrbf"])
        else:
            full_rbf = int((await self.rpc.call("getnetworkinfo"))["version"]) >= FULL_RBF_ALWAYS_SINCE
        info = MempoolInfo(int(r["size"]), int(r["bytes"]), FeeRate.from_btc_per_kvb(r["mempoolminfee"]), full_rbf)
        self.cache.put_ttl("mempoolinfo", info, 5.0)
        return info

    async def estimate_fee(self, target_blocks: int) -> FeeEstimate:
        key = ("fee", target_blocks)
        cached = self.cache.get_ttl(key)
        if not self.cache.missing(cached):
            return cached
        r = await self.rpc.call("estimatesmartfee", target_blocks)
        rate = FeeRate.from_btc_per_kvb(r["feerate"]) if "feerate" in r else None
        estimate = FeeEstimate(int(r.get("blocks", target_blocks)), rate, tuple(r.get("errors", ())))
        self.cache.put_ttl(key, estimate, 30.0)
        return estimate

    # -- watch wallet --------------------------------------------------------------
    async def _ensure_wallet(self) -> None:
        if self._wallet_ready:
            return
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + WATCH_PATIENCE, 0.01
        while (busy := await self._load_or_create_wallet()) is not None:
            if loop.time() > deadline:
                raise BitcoinCoreError(f"the watch wallet {self.wallet} could not be loaded: {busy.rpc_message}")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)
        self._wallet_ready = True

    async def _load_or_create_wallet(self) -> RpcError | None:
        """None once the wallet is loaded; the node's answer while another caller (another
        process) is still creating or loading it, to ask again."""
        try:
            await self.rpc.call("loadwallet", self.wallet, True)
            return None
        except RpcError as err:
            if err.rpc_code == RpcError.WALLET_ALREADY_LOADED or "already loaded" in err.rpc_message:
                return None
            if err.rpc_code == _RPC_WALLET_ERROR and _WALLET_BUSY.search(err.rpc_message):
                return err
            if err.rpc_code != RpcError.WALLET_NOT_FOUND:
                raise
        try:
            await self.rpc.call("createwallet", self.wallet, True, True, "", False, True, True)
            return None
        except RpcError as err:
            if err.rpc_code == RpcError.WALLET_ALREADY_EXISTS:
                return err   # created (or being created) by someone else: load it
            raise

    async def ensure_watching(self, descriptors: Sequence[tuple[str, int]]) -> list[int]:
        if not descriptors:
            return []
        await self._ensure_wallet()
        forms = await self._normalized([d for d, _ in descriptors])
        wanted = [(form, end) for form, (_, end) in zip(forms, descriptors)]
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + WATCH_PATIENCE, 0.01
        attempt: tuple[str, list[tuple[int, int] | None]] | None = None
        while True:
            watched = await self._watched_ranges()
            missing = [(form, end) for form, end in wanted if not _covers(watched.get(_same(form)), end)]
            if not missing:
                return [watched[_same(form)][1] for form, _ in wanted]
            seen = [watched.get(_same(form)) for form, _ in missing]
            if attempt is not None and attempt[0] != "busy" and attempt[1] == seen:
                # An import that succeeded, or lost to a wider one, changes what the node lists.
                raise BitcoinCoreError(f"the watch wallet {self.wallet} does not list {missing[0][0]} over the "
                                       f"range imported; it lists {sorted(watched)}")
            if loop.time() > deadline:
                raise BitcoinCoreError(f"the watch wallet {self.wallet} stayed busy for {WATCH_PATIENCE:.0f} s "
                                       "(other imports or a rescan); its watch range was not extended")
            attempt = (await self._import_ranges(missing, watched), seen)
            if attempt[0] == "busy":
                await asyncio.sleep(delay)
                delay = min(2 * delay, 0.1)   # an import or a short rescan: soon done
            # Then read again what the node watches: it tops ranges up, others may have widened them.

    async def _normalized(self, descriptors: Sequence[str]) -> list[str]:
        """Each descriptor with its checksum, as the node normalizes it (getdescriptorinfo)."""
        unknown = [d for d in dict.fromkeys(descriptors) if d not in self._descriptor_forms]
        if unknown:
            infos = await self._batch([("getdescriptorinfo", [d]) for d in unknown])
            self._descriptor_forms.update((d, info["descriptor"]) for d, info in zip(unknown, infos))
        return [self._descriptor_forms[d] for d in descriptors]

    async def _watched_ranges(self) -> dict[str, tuple[int, int]]:
        """The [start, end] indexes the watch wallet watches of each ranged descriptor (by `_same`)."""
        listed = await self.rpc.call("listdescriptors", wallet=self.wallet)
        ranges: dict[str, tuple[int, int]] = {}
        for d in listed["descriptors"]:
            if "range" in d:
                key, (start, end) = _same(d["desc"]), d["range"]
                old = ranges.get(key, (int(start), int(end)))
                ranges[key] = (min(old[0], int(start)), max(old[1], int(end)))
        return ranges

    async def _import_ranges(self, missing: Sequence[tuple[str, int]],
                             watched: dict[str, tuple[int, int]]) -> str:
        """Import each descriptor over a range holding both `end` and what the node watches now
        (the node refuses to narrow a range, and tops any range up to its keypool size); inactive,
        so the node never hands these addresses out itself. Returns "imported", "raced" (another
        writer widened a range since it was read) or "busy" (another import or a rescan runs)."""
        requests = []
        for form, end in missing:
            start, current_end = watched.get(_same(form), (0, end))
            requests.append({"desc": form, "range": [min(start, 0), max(end, current_end)],
                             "timestamp": "now", "active": False})
        try:
            results = await self.rpc.call("importdescriptors", requests, wallet=self.wallet)
        except RpcError as err:
            if err.rpc_code == _RPC_WALLET_ERROR and "currently rescanning" in err.rpc_message:
                return "busy"
            raise
        errors = [r.get("error") or {} for r in results if not r.get("success")]
        for error in errors:
            if "new range must include current range" not in str(error.get("message", "")):
                raise BitcoinCoreError(f"importdescriptors failed: {error}")
        return "raced" if errors else "imported"

    async def wallet_history(self, since_block: str | None, target_confirmations: int) -> WalletHistory:
        await self._ensure_wallet()
        try:
            r = await self.rpc.call("listsinceblock", since_block or "", target_confirmations, True, True, True,
                                    wallet=self.wallet)
        except RpcError as err:
            if since_block and err.rpc_code == RpcError.INVALID_ADDRESS_OR_KEY:
                log.warning("cursor block %s unknown to the node; rescanning the whole wallet", since_block)
                r = await self.rpc.call("listsinceblock", "", target_confirmations, True, True, True,
                                        wallet=self.wallet)
            else:
                raise
        return WalletHistory(tuple(self._entries(r["transactions"])), tuple(self._entries(r.get("removed", ()))),
                             r["lastblock"])

    @staticmethod
    def _entries(items: Sequence[dict[str, Any]]) -> list[WalletEntry]:
        out = []
        for t in items:
            category = t.get("category")
            if category == "send":
                direction = Direction.SEND
            elif category in ("receive", "generate", "immature"):
                direction = Direction.RECEIVE
            else:
                continue
            out.append(WalletEntry(
                OutPoint(Txid(t["txid"]), int(t["vout"])), t.get("address"), _sat(t["amount"]), direction,
                int(t.get("confirmations", 0)), t.get("blockhash"), t.get("blockheight"),
                _txids(t.get("walletconflicts")),
                Txid(t["replaced_by_txid"]) if t.get("replaced_by_txid") else None,
                Txid(t["replaces_txid"]) if t.get("replaces_txid") else None,
                bool(t.get("abandoned", False)), first_seen=BitcoinCoreBackend._first_seen(t)))
        return out

    @staticmethod
    def _first_seen(t: dict[str, Any]) -> dt.datetime | None:
        """When the node first saw the transaction: the earlier of `timereceived` (when the wallet
        first had it) and `time` (the same for one seen in the mempool; for one first seen in a
        block, that block's time, capped at its arrival). Whole seconds, as the node keeps them."""
        times = [int(t[k]) for k in ("time", "timereceived") if t.get(k) is not None]
        return dt.datetime.fromtimestamp(min(times), dt.timezone.utc) if times else None

    async def wallet_transactions(self, txids: Sequence[Txid]) -> dict[Txid, WalletTransaction | None]:
        if not txids:
            return {}
        await self._ensure_wallet()
        replies = await self.rpc.batch([("gettransaction", [t.value, True, False]) for t in txids],
                                       wallet=self.wallet)
        found: dict[Txid, dict[str, Any]] = {}
        out: dict[Txid, WalletTransaction | None] = {}
        for txid, reply in zip(txids, replies):
            if isinstance(reply, RpcError):
                if reply.rpc_code != RpcError.INVALID_ADDRESS_OR_KEY:
                    raise reply
                out[txid] = None
            else:
                found[txid] = reply
        in_mempool = await self.in_mempool([t for t, r in found.items() if int(r.get("confirmations", 0)) == 0])
        own = await self._own_outputs(found)
        for txid, r in found.items():
            details = [dict(d, txid=txid.value, confirmations=r.get("confirmations", 0),
                            blockhash=r.get("blockhash"), time=r.get("time"),
                            timereceived=r.get("timereceived")) for d in [*r.get("details", ()), *own.get(txid, ())]
                       if d.get("category") in ("receive", "generate", "immature")]
            out[txid] = WalletTransaction(
                txid, int(r.get("confirmations", 0)), txid in in_mempool, r.get("blockhash"),
                _txids(r.get("walletconflicts")), _txids(r.get("mempoolconflicts")),
                Txid(r["replaced_by_txid"]) if r.get("replaced_by_txid") else None,
                Txid(r["replaces_txid"]) if r.get("replaces_txid") else None,
                tuple(self._entries(details)))
        return out

    async def _own_outputs(self, found: dict[Txid, dict[str, Any]]) -> dict[Txid, list[dict[str, Any]]]:
        """The outputs to our addresses that `gettransaction` leaves out of `details`.

        For a transaction that spends a coin of the wallet (a withdrawal, or a payjoin adding
        our coin to a customer's payment), the node lists an output to an address of ours as
        change unless the address is in its address book, and our descriptors' addresses never
        are: it lists no `receive` for it at all (`listsinceblock` does with `include_change`).
        Those outputs are read from the decoded transaction, each kept if the wallet owns it."""
        spending = [t for t, r in found.items() if any(d.get("category") == "send" for d in r.get("details", ()))]
        known = {t: self._own[t] for t in spending if t in self._own}
        spending = [t for t in spending if t not in known]
        if not spending:
            return known
        decoded = await self.rpc.batch([("gettransaction", [t.value, True, True]) for t in spending],
                                       wallet=self.wallet)
        for reply in decoded:
            if isinstance(reply, RpcError):
                raise reply
        candidates: dict[Txid, list[dict[str, Any]]] = {}
        for txid, reply in zip(spending, decoded):
            listed = {int(d["vout"]) for d in found[txid].get("details", ())
                      if d.get("category") in ("receive", "generate", "immature")}
            for out in reply.get("decoded", {}).get("vout", ()):
                address = out.get("scriptPubKey", {}).get("address")
                if address and int(out["n"]) not in listed:
                    candidates.setdefault(txid, []).append(
                        {"category": "receive", "address": address, "vout": int(out["n"]), "amount": out["value"]})
        addresses = sorted({c["address"] for cs in candidates.values() for c in cs})
        infos = await self.rpc.batch([("getaddressinfo", [a]) for a in addresses], wallet=self.wallet) \
            if addresses else []
        for info in infos:
            if isinstance(info, RpcError):
                raise info
        mine = {a for a, i in zip(addresses, infos) if i.get("ismine")}
        for t in spending:
            self._own[t] = [c for c in candidates.get(t, ()) if c["address"] in mine]
            known[t] = self._own[t]
        while len(self._own) > OWN_OUTPUTS_KEPT:
            self._own.popitem(last=False)
        return known

    async def wallet_synced(self) -> bool:
        await self._ensure_wallet()
        # One batch, run in order by the node: the best block first, then what the wallet took in.
        best, info = await self.rpc.batch([("getbestblockhash", []), ("getwalletinfo", [])], wallet=self.wallet)
        for reply in (best, info):
            if isinstance(reply, RpcError):
                raise reply
        processed = info.get("lastprocessedblock")
        if not isinstance(processed, dict):
            return True   # a node older than 26 does not say; its wallet is taken as it answers
        return processed.get("hash") == best

    async def unspent(self, min_confirmations: int = 0) -> list[Utxo]:
        await self._ensure_wallet()
        rows = await self.rpc.call("listunspent", min_confirmations, 9_999_999, [], True, wallet=self.wallet)
        out = []
        for u in rows:
            chain = index = None
            m = _ORIGIN.search(u.get("desc", ""))
            if m:
                steps = [s for s in m.group(1).split("/") if s]
                if len(steps) >= 2 and steps[-1].isdigit() and steps[-2].isdigit():
                    chain, index = int(steps[-2]), int(steps[-1])
            out.append(Utxo(OutPoint(Txid(u["txid"]), int(u["vout"])), _sat(u["amount"]), u.get("address", ""),
                            int(u["confirmations"]), chain, index))
        return out

    async def test_accept(self, raw_tx: bytes) -> MempoolAcceptance:
        (r,) = await self.rpc.call("testmempoolaccept", [raw_tx.hex()])
        fees = r.get("fees") or {}
        return MempoolAcceptance(Txid(r["txid"]), bool(r["allowed"]), r.get("reject-reason", ""),
                                 r.get("vsize"), _sat(fees["base"]) if "base" in fees else None)

    async def broadcast(self, raw_tx: bytes) -> Txid:
        return Txid(await self.rpc.call("sendrawtransaction", raw_tx.hex()))

    # -- one node: always the primary -----------------------------------------------------
    async def cross_check(self) -> NodeReport:
        try:
            return NodeReport((await self.status(NodeState.PRIMARY),))
        except RpcConnectionError:
            return NodeReport((NodeStatus(self.rpc.url, NodeState.DOWN),))

    async def status(self, state: NodeState) -> NodeStatus:
        """This node's tip, version and how long it took to answer (raises when it does not)."""
        started = time.perf_counter()
        chain, network = await self._batch([("getblockchaininfo", []), ("getnetworkinfo", [])])
        latency = round((time.perf_counter() - started) * 1000, 2)
        return NodeStatus(self.rpc.url, state, int(chain["blocks"]), chain["bestblockhash"], latency,
                          int(network["version"]))

    async def finality_held(self) -> bool:
        return False

    async def _batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        results = await self.rpc.batch(calls)
        for r in results:
            if isinstance(r, RpcError):
                raise r
        return results

    async def close(self) -> None:
        await self.rpc.close()
