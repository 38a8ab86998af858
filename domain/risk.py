"""The risk review of a withdrawal (the seed's activity monitor): explainable rules, each a
pure function of the request and the requester's history, each adding a fixed weight.

| reason | weight | fires when |
|---|---|---|
| `own_deposit_address` | 70 | a payout goes to one of our own deposit addresses |
| `large_amount` | 35 | the amount is more than 5 times the largest of the user's earlier withdrawals |
| `rapid_succession` | 25 | the user's previous withdrawal was less than 60 seconds ago |
| `velocity` | 20 | the user made 5 or more withdrawals in the last hour |
| `near_limit` | 20 | the amount takes the user to 90 % or more of one of their limits |
| `new_destination` | 15 | the user never withdrew to (one of) these addresses before |

The history rules (all but `own_deposit_address`) look at the withdrawals of the user named
with `--user`; a withdrawal without a user has no history and is judged by
`own_deposit_address` alone. The score is the sum, at most 100; at or above the review score
(`KACCY_REVIEW_SCORE`, 70) the withdrawal is held for an operator.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Sequence

import attrs

from kaccy_bitcoin.domain import limits as limit_rules

WEIGHTS = {
    "own_deposit_address": 70,
    "large_amount": 35,
    "rapid_succession": 25,
    "velocity": 20,
    "near_limit": 20,
    "new_destination": 15,
}
REASONS = tuple(WEIGHTS)   # the order reasons are listed in
LARGE_FACTOR = 5
RAPID = dt.timedelta(seconds=60)
VELOCITY_COUNT = 5
DEFAULT_REVIEW_SCORE = 70


@attrs.frozen
class RiskAssessment:
    score: int
    reasons: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.score <= 100 or any(r not in WEIGHTS for r in self.reasons):
            raise ValueError(f"not a risk assessment: {self.score} {self.reasons}")

    def held(self, review_score: int) -> bool:
        return self.score >= review_score

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RiskAssessment:
        if not data:
            return NO_RISK
        return cls(int(data["score"]), tuple(data["reasons"]))

    @classmethod
    def of(cls, reasons: Iterable[str]) -> RiskAssessment:
        fired = set(reasons)
        ordered = tuple(r for r in REASONS if r in fired)
        return cls(min(100, sum(WEIGHTS[r] for r in ordered)), ordered)


NO_RISK = RiskAssessment(0, ())


def assess(amount_sat: int, destinations: Sequence[str], now: dt.datetime, *, user: str | None,
           history: Sequence[limit_rules.Usage], own_addresses: Iterable[str],
           limits: limit_rules.Limits | None) -> RiskAssessment:
    """The risk of a withdrawal paying `amount_sat` in total to `destinations`, made by `user`
    whose earlier withdrawals (returned ones included: they were asked for) are `history`."""
    fired = []
    if set(destinations) & set(own_addresses):
        fired.append("own_deposit_address")
    if user is not None:
        earlier = [h for h in history if h.at <= now]
        if earlier and amount_sat > LARGE_FACTOR * max(h.amount_sat for h in earlier):
            fired.append("large_amount")
        if earlier and now - max(h.at for h in earlier) < RAPID:
            fired.append("rapid_succession")
        if sum(1 for h in earlier if now - h.at < limit_rules.HOUR) >= VELOCITY_COUNT:
            fired.append("velocity")
        if limit_rules.near_limit(amount_sat, now, limits, earlier):
            fired.append("near_limit")
        used = {d for h in earlier for d in h.destinations}
        if any(d not in used for d in destinations):
            fired.append("new_destination")
    return RiskAssessment.of(fired)
