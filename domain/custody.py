"""Tiered custody: amount bands choose the wallet a withdrawal is paid from, and target shares
say how the platform's coins should be spread over the tiers.

`KACCY_CUSTODY_TIERS` lists the tiers from hottest to coldest, each `name=wallet:cap_sat`
(the last may have no cap): `hot=default:2000000,warm=treasury:50000000,cold=vault`. A
withdrawal that names no wallet is paid by the first tier whose cap holds its payout total;
one that names a wallet of a capped tier is refused above that cap (`tier_exceeded`). A
Lightning payout spends LND's channels, hot money: it is held to the first tier's cap.

`KACCY_CUSTODY_TARGETS` gives each tier's target share of the total in percent,
`hot=5,warm=25,cold=70`. `custody status` compares the balances with them and proposes the
one move between the first two tiers that restores the first tier's share: a *sweep*
(hot -> warm) when the hot wallet holds more than its target, a *refill* (warm -> hot) when
it holds less. Moves below MIN_MOVE_SAT are not proposed.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Sequence

import attrs

from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.wallets import check_name

MIN_MOVE_SAT = 10_000
LIGHTNING = "lightning"   # the "wallet" of a Lightning payout: LND's channels


class InvalidCustodyConfig(DomainError):
    code = "config_error"


class TierExceeded(DomainError):
    code = "tier_exceeded"

    def __init__(self, tier: str, wallet: str, cap_sat: int, amount_sat: int) -> None:
        self.tier, self.wallet, self.cap_sat, self.amount_sat = tier, wallet, cap_sat, amount_sat
        how = "over Lightning: pay it on chain" if wallet == LIGHTNING else "pay it"
        super().__init__(f"{amount_sat} sat is above the {cap_sat} sat cap of tier {tier} (wallet {wallet}): "
                         f"{how} from a colder tier's wallet")


@attrs.frozen
class Tier:
    name: str
    wallet: str
    cap_sat: int | None          # None: no cap (the coldest tier)
    target_pct: Decimal | None = None


@attrs.frozen
class CustodyPolicy:
    tiers: tuple[Tier, ...] = ()

    @classmethod
    def parse(cls, tiers: str | None, targets: str | None = None) -> CustodyPolicy:
        if not tiers or not tiers.strip():
            if targets and targets.strip():
                raise InvalidCustodyConfig("KACCY_CUSTODY_TARGETS is set but KACCY_CUSTODY_TIERS is not")
            return cls()
        parsed: list[Tier] = []
        for part in tiers.split(","):
            name, sep, rest = part.strip().partition("=")
            wallet, _, cap = rest.partition(":")
            if not sep or not name.strip() or not wallet.strip():
                raise InvalidCustodyConfig(f"KACCY_CUSTODY_TIERS: {part.strip()!r} is not name=wallet[:cap_sat]")
            cap_sat = None
            if cap.strip():
                if not cap.strip().isdigit() or int(cap) <= 0:
                    raise InvalidCustodyConfig(f"KACCY_CUSTODY_TIERS: the cap of {name.strip()} must be a positive "
                                               f"number of sat, got {cap!r}")
                cap_sat = int(cap)
            parsed.append(Tier(name.strip(), check_name(wallet.strip()), cap_sat))
        names = [t.name for t in parsed]
        if len(set(names)) != len(names) or len({t.wallet for t in parsed}) != len(parsed):
            raise InvalidCustodyConfig("KACCY_CUSTODY_TIERS: each tier and each wallet may appear once")
        caps = [t.cap_sat for t in parsed]
        if any(c is None for c in caps[:-1]):
            raise InvalidCustodyConfig("KACCY_CUSTODY_TIERS: only the last (coldest) tier may have no cap")
        bounded = [c for c in caps if c is not None]
        if bounded != sorted(set(bounded)):
            raise InvalidCustodyConfig("KACCY_CUSTODY_TIERS: caps must grow from the hottest tier to the coldest")
        shares = _targets(targets, names)
        return cls(tuple(attrs.evolve(t, target_pct=shares.get(t.name)) for t in parsed))

    def tier_of(self, wallet: str) -> Tier | None:
        return next((t for t in self.tiers if t.wallet == wallet), None)

    def choose(self, amount_sat: int) -> str | None:
        """The wallet of the first tier whose cap holds `amount_sat`; None without tiers."""
        if not self.tiers:
            return None
        for tier in self.tiers:
            if tier.cap_sat is None or amount_sat <= tier.cap_sat:
                return tier.wallet
        last = self.tiers[-1]
        raise TierExceeded(last.name, last.wallet, last.cap_sat or 0, amount_sat)

    def check(self, wallet: str, amount_sat: int) -> None:
        tier = self.tier_of(wallet)
        if tier is not None and tier.cap_sat is not None and amount_sat > tier.cap_sat:
            raise TierExceeded(tier.name, wallet, tier.cap_sat, amount_sat)

    def check_lightning(self, amount_sat: int) -> None:
        """A Lightning payout is paid from the node's channels: hot money, held to the hottest
        tier's cap (TierExceeded above it; no tiers, no cap)."""
        if self.tiers and self.tiers[0].cap_sat is not None and amount_sat > self.tiers[0].cap_sat:
            hot = self.tiers[0]
            raise TierExceeded(hot.name, LIGHTNING, hot.cap_sat, amount_sat)

    def status(self, balances: dict[str, int]) -> dict[str, Any]:
        """Each tier's balance against its target, and the move that restores the first tier."""
        total = sum(balances.get(t.wallet, 0) for t in self.tiers)
        rows = []
        for t in self.tiers:
            balance = balances.get(t.wallet, 0)
            target = None if t.target_pct is None else int(total * t.target_pct / 100)
            rows.append({"tier": t.name, "wallet": t.wallet, "cap_sat": t.cap_sat, "balance_sat": balance,
                         "share_pct": _pct(balance, total),
                         "target_pct": None if t.target_pct is None else str(t.target_pct),
                         "target_sat": target,
                         "deviation_sat": None if target is None else balance - target})
        return {"total_sat": total, "tiers": rows, "proposals": self._proposals(rows)}

    @staticmethod
    def _proposals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(rows) < 2 or rows[0]["target_sat"] is None:
            return []
        hot, warm = rows[0], rows[1]
        excess = hot["deviation_sat"]
        if excess >= MIN_MOVE_SAT:
            return [_move("sweep", hot, warm, excess)]
        need = min(-excess, warm["balance_sat"])
        if need >= MIN_MOVE_SAT:
            return [_move("refill", warm, hot, need)]
        return []


def _move(action: str, source: dict[str, Any], dest: dict[str, Any], amount: int) -> dict[str, Any]:
    return {"action": action, "from_tier": source["tier"], "to_tier": dest["tier"],
            "withdrawal": {"wallet": source["wallet"], "to_wallet": dest["wallet"], "amount_sat": amount},
            "command": f"kaccy-bitcoin withdraw create --wallet {source['wallet']} --to-wallet {dest['wallet']} "
                       f"--amount-sat {amount}"}


def _pct(part: int, total: int) -> str:
    return str((Decimal(part) * 100 / total).quantize(Decimal("0.01"))) if total else "0.00"


def _targets(text: str | None, names: list[str]) -> dict[str, Decimal]:
    if not text or not text.strip():
        return {}
    shares: dict[str, Decimal] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            share = Decimal(value.strip().rstrip("%"))
        except ArithmeticError:
            share = Decimal(-1)
        if not sep or name.strip() not in names or not share.is_finite() or not 0 <= share <= 100:
            raise InvalidCustodyConfig(f"KACCY_CUSTODY_TARGETS: {part.strip()!r} is not tier=percent for one of "
                                       f"the tiers {', '.join(names)}")
        shares[name.strip()] = share
    if sum(shares.values()) > 100:
        raise InvalidCustodyConfig("KACCY_CUSTODY_TARGETS: the shares add up to more than 100 %")
    return shares
