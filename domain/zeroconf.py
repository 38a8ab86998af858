"""How risky it is to accept a payment before it confirms (zero-conf): explainable rules, each a
pure function of what the node says about the transaction, each adding a fixed weight.

| reason | weight | fires when |
|---|---|---|
| `conflict_seen` | 60 | the node's wallet knows a transaction spending the same coins (walletconflicts, mempoolconflicts) |
| `not_in_mempool` | 60 | the node's mempool does not hold the transaction when it is scored |
| `replaceable` | 50 | the transaction or an unconfirmed ancestor signals BIP125, or the node relays full-RBF replacements |
| `fee_below_next_block` | 35 | its fee rate is below the node's estimate for confirmation within 2 blocks (when it has one) |
| `fee_near_mempool_minimum` | 35 | its fee rate is below twice the mempool's minimum fee rate |
| `large_amount` | 30 | the output pays more than `KACCY_ZEROCONF_MAX_SAT` (when that is set) |
| `unconfirmed_parents` | 15 | it spends outputs of transactions that are not confirmed yet |
| `long_unconfirmed_chain` | 15 | it has 5 or more unconfirmed ancestors |

The fee rate judged is the lower of the transaction's own and its ancestor package's (fees over
virtual size of it and its unconfirmed ancestors): miners select packages, so a payment hanging
off a cheap parent waits for that parent. The score is the sum, at most 100.

A policy (`KACCY_ZEROCONF_MAX_SAT`, `KACCY_ZEROCONF_MAX_SCORE`) accepts an order at once when
its unconfirmed payments each pay at most the maximum amount and score at most the maximum score.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

import attrs

from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

WEIGHTS = {
    "conflict_seen": 60,
    "not_in_mempool": 60,
    "replaceable": 50,
    "fee_below_next_block": 35,
    "fee_near_mempool_minimum": 35,
    "large_amount": 30,
    "unconfirmed_parents": 15,
    "long_unconfirmed_chain": 15,
}
REASONS = tuple(WEIGHTS)          # the order reasons are listed in
MIN_FEE_FACTOR = 2                # fee_near_mempool_minimum: below this many times mempoolminfee
LONG_CHAIN = 5                    # long_unconfirmed_chain: this many unconfirmed ancestors or more
NEXT_BLOCK_TARGET = 2             # fee_below_next_block: estimatesmartfee's target
DEFAULT_MAX_SCORE = 30


@attrs.frozen
class ZeroconfFacts:
    """What the node says about one unconfirmed transaction paying us (and the output's amount).

    `fee_rate`/`package_fee_rate` are None when the mempool does not hold the transaction;
    `next_block_rate` is None when the node has no estimate."""

    amount: Satoshis
    in_mempool: bool
    signals_rbf: bool = False            # BIP125, on it or on an unconfirmed ancestor
    node_full_rbf: bool = False          # getmempoolinfo's `fullrbf`
    fee_rate: FeeRate | None = None
    package_fee_rate: FeeRate | None = None
    next_block_rate: FeeRate | None = None
    mempool_min_fee: FeeRate = FeeRate(1000)
    unconfirmed_ancestors: int = 0       # not counting itself
    conflicts: tuple[Txid, ...] = ()

    @property
    def effective_fee_rate(self) -> FeeRate | None:
        rates = [r for r in (self.fee_rate, self.package_fee_rate) if r is not None]
        return min(rates, key=lambda r: r.sat_per_kvb) if rates else None


@attrs.frozen
class ZeroconfRisk:
    """A score from 0 (safe) to 100 and the rules that made it; `details` says why each fired."""

    score: int
    reasons: tuple[str, ...]
    details: tuple[tuple[str, str], ...] = ()

    def __attrs_post_init__(self) -> None:
        if (isinstance(self.score, bool) or not isinstance(self.score, int) or not 0 <= self.score <= 100
                or any(r not in WEIGHTS for r in self.reasons)):
            raise ValueError(f"not a zero-conf risk: {self.score} {self.reasons}")

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "reasons": list(self.reasons), "details": dict(self.details)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ZeroconfRisk | None:
        if not data:
            return None
        reasons, details = tuple(data["reasons"]), data.get("details") or {}
        return cls(int(data["score"]), reasons, tuple((r, details[r]) for r in reasons if r in details))


def score(facts: ZeroconfFacts, max_sat: int = 0) -> ZeroconfRisk:
    """The rules of the module docstring applied to `facts`; `max_sat` 0: no `large_amount` rule."""
    fired: dict[str, str] = {}
    if facts.conflicts:
        fired["conflict_seen"] = "conflicts with " + ", ".join(sorted(t.value for t in facts.conflicts))
    if not facts.in_mempool:
        fired["not_in_mempool"] = "the node's mempool does not hold it"
    if facts.signals_rbf:
        fired["replaceable"] = "signals BIP125 replaceability (itself or an unconfirmed ancestor)"
    elif facts.node_full_rbf:
        fired["replaceable"] = "the node relays full-RBF replacements (fullrbf): any payment can be replaced"
    rate = facts.effective_fee_rate
    if rate is not None:
        if facts.next_block_rate is not None and rate.sat_per_kvb < facts.next_block_rate.sat_per_kvb:
            fired["fee_below_next_block"] = (f"{rate} is below the node's estimate of {facts.next_block_rate} "
                                             f"for {NEXT_BLOCK_TARGET} blocks")
        floor = facts.mempool_min_fee.sat_per_kvb * MIN_FEE_FACTOR
        if rate.sat_per_kvb < floor:
            fired["fee_near_mempool_minimum"] = (f"{rate} is below {MIN_FEE_FACTOR} x the mempool's minimum "
                                                 f"of {facts.mempool_min_fee}")
    if max_sat > 0 and facts.amount.value > max_sat:
        fired["large_amount"] = f"{facts.amount.value} sat is above the zero-conf maximum of {max_sat} sat"
    if facts.unconfirmed_ancestors > 0:
        fired["unconfirmed_parents"] = f"{facts.unconfirmed_ancestors} unconfirmed ancestor(s)"
    if facts.unconfirmed_ancestors >= LONG_CHAIN:
        fired["long_unconfirmed_chain"] = f"{facts.unconfirmed_ancestors} unconfirmed ancestors (>= {LONG_CHAIN})"
    reasons = tuple(r for r in REASONS if r in fired)
    return ZeroconfRisk(min(100, sum(WEIGHTS[r] for r in reasons)), reasons,
                        tuple((r, fired[r]) for r in reasons))


@attrs.frozen
class ZeroconfPolicy:
    """Accept an order before it confirms: off while `max_sat` is 0."""

    max_sat: int = 0
    max_score: int = DEFAULT_MAX_SCORE

    def __attrs_post_init__(self) -> None:
        if self.max_sat < 0 or not 0 <= self.max_score <= 100:
            raise ValueError(f"not a zero-conf policy: max_sat {self.max_sat}, max_score {self.max_score}")

    @property
    def enabled(self) -> bool:
        return self.max_sat > 0

    def allows(self, amount: Satoshis, risk: ZeroconfRisk | None) -> bool:
        """One unconfirmed payment may count before it confirms (an unscored one never does)."""
        return (self.enabled and risk is not None and amount.value <= self.max_sat
                and risk.score <= self.max_score)


@attrs.frozen
class ZeroconfDoubleSpend:
    """Payments an order was accepted on that were then replaced or double-spent."""

    at: dt.datetime
    txids: tuple[str, ...]
    replaced_by: tuple[str, ...]
    amount_lost_sat: int

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "txids": list(self.txids), "replaced_by": list(self.replaced_by),
                "amount_lost_sat": self.amount_lost_sat}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZeroconfDoubleSpend:
        return cls(dt.datetime.fromisoformat(data["at"]), tuple(data["txids"]), tuple(data["replaced_by"]),
                   int(data["amount_lost_sat"]))


@attrs.frozen
class ZeroconfAcceptance:
    """An order accepted before it confirmed: when, on which transactions, for how much."""

    at: dt.datetime
    txids: tuple[str, ...]
    accepted_sat: int
    double_spend: ZeroconfDoubleSpend | None = None

    def lost(self, txids: Iterable[str], replaced_by: Iterable[str], received_sat: int,
             at: dt.datetime) -> ZeroconfAcceptance:
        """This acceptance after `txids` (of those it was made on) went away: the amount lost is what
        the order receives now short of what it was accepted with."""
        before = self.double_spend
        gone = tuple(sorted({*(before.txids if before else ()), *txids}))
        rivals = tuple(sorted({*(before.replaced_by if before else ()), *replaced_by}))
        lost = ZeroconfDoubleSpend(at, gone, rivals, max(0, self.accepted_sat - received_sat))
        return attrs.evolve(self, double_spend=lost)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "txids": list(self.txids), "accepted_sat": self.accepted_sat,
                "double_spend": self.double_spend.to_dict() if self.double_spend else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ZeroconfAcceptance | None:
        if not data:
            return None
        spend = data.get("double_spend")
        return cls(dt.datetime.fromisoformat(data["at"]), tuple(data["txids"]), int(data["accepted_sat"]),
                   ZeroconfDoubleSpend.from_dict(spend) if spend else None)
