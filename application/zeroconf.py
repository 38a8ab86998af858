"""Scoring payments seen unconfirmed: ask the node what domain/zeroconf.py's rules need.

For the new unconfirmed outputs of one monitor poll: each transaction's mempool entry (its fee,
size, BIP125 signal and unconfirmed ancestors), the mempool's minimum fee and full-RBF setting,
the node's fee estimate for the next 2 blocks, and the wallet's conflicts of each transaction.
A few calls per poll that sees new unconfirmed payments, none otherwise.
"""
from __future__ import annotations

from typing import Mapping

from kaccy_bitcoin.domain.bitcoin import OutPoint
from kaccy_bitcoin.domain.chain import MempoolEntry, MempoolInfo, WalletTransaction
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.zeroconf import NEXT_BLOCK_TARGET, ZeroconfFacts, ZeroconfPolicy, ZeroconfRisk, score
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend


class ScoreUnconfirmed:
    """The zero-conf risk of unconfirmed outputs paying us, by outpoint."""

    def __init__(self, chain: ChainBackend, policy: ZeroconfPolicy) -> None:
        self._chain = chain
        self._policy = policy

    async def __call__(self, amounts: Mapping[OutPoint, Satoshis]) -> dict[OutPoint, ZeroconfRisk]:
        if not amounts:
            return {}
        txids = sorted({op.txid for op in amounts}, key=lambda t: t.value)
        entries = await self._chain.mempool_entries(txids)
        info = await self._chain.mempool_info()
        estimate = await self._chain.estimate_fee(NEXT_BLOCK_TARGET)
        views = await self._chain.wallet_transactions(txids)
        return {op: score(_facts(amount, entries.get(op.txid), info, estimate.rate, views.get(op.txid)),
                          self._policy.max_sat)
                for op, amount in amounts.items()}


def _rate(fee: Satoshis, vsize: int) -> FeeRate | None:
    return FeeRate(fee.value * 1000 // vsize) if vsize > 0 else None


def _facts(amount: Satoshis, entry: MempoolEntry | None, info: MempoolInfo, next_block: FeeRate | None,
           view: WalletTransaction | None) -> ZeroconfFacts:
    conflicts = tuple(sorted({*(view.wallet_conflicts if view else ()), *(view.mempool_conflicts if view else ())},
                             key=lambda t: t.value))
    if entry is None:
        return ZeroconfFacts(amount, in_mempool=False, node_full_rbf=info.full_rbf, next_block_rate=next_block,
                             mempool_min_fee=info.min_fee, conflicts=conflicts)
    return ZeroconfFacts(
        amount, in_mempool=True, signals_rbf=entry.replaceable, node_full_rbf=info.full_rbf,
        fee_rate=_rate(entry.fee, entry.vsize), package_fee_rate=_rate(entry.ancestor_fees, entry.ancestor_vsize),
        next_block_rate=next_block, mempool_min_fee=info.min_fee,
        unconfirmed_ancestors=max(0, entry.ancestor_count - 1), conflicts=conflicts)
