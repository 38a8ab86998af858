"""Coin selection, as Bitcoin Core defines it (src/wallet/coinselection.cpp), in integers.

Coins are valued at their *effective value* (amount minus the fee to spend them at the
target rate). Three algorithms propose selections: Branch-and-Bound (a changeless exact
match within the cost of change), Single Random Draw, and Knapsack; the one with the
lowest *waste* wins:

    waste = sum over inputs of (fee at the target rate - fee at the long-term rate)
            + (cost of change if there is change, else the excess dropped to fees)

Change below the dust limit is never made: its value goes to the fee.
"""
from __future__ import annotations

import random
import sys
from typing import Sequence

import attrs

from kaccy_bitcoin.domain.bitcoin import AddressType, OutPoint
from kaccy_bitcoin.domain.errors import InsufficientFunds
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

# Weights in weight units (vbytes x 4).
TX_OVERHEAD_WEIGHT = 42          # version, locktime, 1-byte in/out counts, segwit marker+flag
LEGACY_TX_OVERHEAD_WEIGHT = 40   # the same without marker and flag: every input is P2PKH
# One signed input of each script the wallet derives (AddressType.P2SH is P2SH-P2WPKH):
# outpoint, sequence, scriptSig and, for segwit, the witness with its item count. ECDSA
# inputs are priced with a 72-byte signature, the worst case (a signer that does not grind
# low R); BIP86 taproot key-path inputs with a 64-byte SIGHASH_DEFAULT Schnorr signature.
INPUT_WEIGHT = {AddressType.P2WPKH: 272, AddressType.P2SH: 364, AddressType.P2PKH: 592, AddressType.P2TR: 230}
P2WPKH_INPUT_WEIGHT = INPUT_WEIGHT[AddressType.P2WPKH]
OUTPUT_WEIGHT = {"p2wpkh": 124, "p2sh": 128, "p2pkh": 136, "p2wsh": 172, "p2tr": 172}
OUTPUT_TYPE_WEIGHT = {AddressType(name): weight for name, weight in OUTPUT_WEIGHT.items()}
# Outputs below these values are dust at Bitcoin Core's 3 sat/vB dust relay fee
# (the output's size plus the size of spending it, as Core's GetDustThreshold counts).
DUST_LIMIT = {AddressType.P2PKH: 546, AddressType.P2SH: 540, AddressType.P2WPKH: 294,
              AddressType.P2WSH: 330, AddressType.P2TR: 330}
BNB_MAX_TRIES = 100_000


def multisig_input_weight(threshold: int, keys: int) -> int:
    """One signed P2WSH `sortedmulti(threshold, keys...)` input: outpoint, sequence and an empty
    scriptSig (41 bytes x 4), then the witness: its item count, the empty item CHECKMULTISIG
    pops, `threshold` 72-byte signatures with their length bytes, and the witness script
    (OP_m, `keys` pushes of 33-byte keys, OP_n, OP_CHECKMULTISIG) with its length byte."""
    script = 3 + 34 * keys
    return 41 * 4 + 1 + 1 + 73 * threshold + (1 if script < 253 else 3) + script
KNAPSACK_ITERATIONS = 1000


def vsize(weight: int) -> int:
    return -(-weight // 4)


def overhead_weight(spend_type: AddressType) -> int:
    """The weight of a transaction's fixed fields when all its inputs are of `spend_type`."""
    return LEGACY_TX_OVERHEAD_WEIGHT if spend_type is AddressType.P2PKH else TX_OVERHEAD_WEIGHT


@attrs.frozen
class Coin:
    outpoint: OutPoint
    amount: Satoshis
    input_weight: int = P2WPKH_INPUT_WEIGHT


@attrs.frozen
class SelectionParams:
    fee_rate: FeeRate
    long_term_fee_rate: FeeRate = FeeRate(10_000)      # 10 sat/vB, Core's -consolidatefeerate
    change_output_weight: int = OUTPUT_WEIGHT["p2wpkh"]
    change_spend_weight: int = P2WPKH_INPUT_WEIGHT
    dust_limit: Satoshis = Satoshis(294)                # P2WPKH at the 3 sat/vB dust relay fee
    min_change: Satoshis = Satoshis(50_000)             # Core's CHANGE_LOWER for random draws

    @classmethod
    def for_type(cls, fee_rate: FeeRate, spend_type: AddressType, spend_weight: int | None = None) -> SelectionParams:
        """Parameters for a wallet whose coins and change are all of `spend_type` (a P2WSH
        wallet gives the weight of spending one of its coins, see multisig_input_weight)."""
        return cls(fee_rate, change_output_weight=OUTPUT_TYPE_WEIGHT[spend_type],
                   change_spend_weight=INPUT_WEIGHT[spend_type] if spend_weight is None else spend_weight,
                   dust_limit=Satoshis(DUST_LIMIT[spend_type]))

    def input_fee(self, coin: Coin) -> int:
        return self.fee_rate.fee_for(vsize(coin.input_weight)).value

    def effective_value(self, coin: Coin) -> int:
        return coin.amount.value - self.input_fee(coin)

    @property
    def change_fee(self) -> int:
        return self.fee_rate.fee_for(vsize(self.change_output_weight)).value

    @property
    def cost_of_change(self) -> int:
        return self.change_fee + self.long_term_fee_rate.fee_for(vsize(self.change_spend_weight)).value


@attrs.frozen
class Selection:
    coins: tuple[Coin, ...]
    algorithm: str
    fee: Satoshis
    change: Satoshis        # zero when the transaction has no change output
    waste: int

    @property
    def total(self) -> Satoshis:
        return Satoshis(sum(c.amount.value for c in self.coins))


def finish_selection(coins: Sequence[Coin], algorithm: str, target: Satoshis, fixed_weight: int,
            params: SelectionParams, allow_change: bool) -> Selection | None:
    """Fee, change and waste of a candidate set; None when it does not pay for itself."""
    total = sum(c.amount.value for c in coins)
    weight = fixed_weight + sum(c.input_weight for c in coins)
    fee_without_change = params.fee_rate.fee_for(vsize(weight)).value
    excess = total - target.value - fee_without_change
    if excess < 0:
        return None
    spend_waste = sum(params.input_fee(c) - params.long_term_fee_rate.fee_for(vsize(c.input_weight)).value
                      for c in coins)
    if allow_change:
        fee_with_change = params.fee_rate.fee_for(vsize(weight + params.change_output_weight)).value
        change = total - target.value - fee_with_change
        if change >= params.dust_limit.value:
            return Selection(tuple(coins), algorithm, Satoshis(fee_with_change), Satoshis(change),
                             spend_waste + params.cost_of_change)
    return Selection(tuple(coins), algorithm, Satoshis(fee_without_change + excess), Satoshis(0),
                     spend_waste + excess)


def branch_and_bound(coins: Sequence[Coin], target_eff: int, params: SelectionParams) -> list[Coin] | None:
    """Depth-first search, largest coins first, for the subset with the least waste whose
    effective value lands in [target, target + cost_of_change]: no change output needed."""
    pool = sorted((c for c in coins if params.effective_value(c) > 0), key=params.effective_value, reverse=True)
    values = [params.effective_value(c) for c in pool]
    spend_waste = [params.input_fee(c) - params.long_term_fee_rate.fee_for(vsize(c.input_weight)).value
                   for c in pool]
    remaining = [0] * (len(pool) + 1)
    for i in range(len(pool) - 1, -1, -1):
        remaining[i] = remaining[i + 1] + values[i]
    upper = target_eff + params.cost_of_change
    best: list[int] | None = None
    best_waste = 0
    selected: list[int] = []
    tries = 0

    def search(i: int, value: int, waste: int) -> None:
        nonlocal best, best_waste, tries
        tries += 1
        if tries > BNB_MAX_TRIES or value > upper:
            return
        if value >= target_eff:
            total = waste + value - target_eff
            if best is None or total < best_waste:
                best, best_waste = list(selected), total
            return
        if i == len(pool) or value + remaining[i] < target_eff:
            return
        selected.append(i)
        search(i + 1, value + values[i], waste + spend_waste[i])
        selected.pop()
        # Leaving coin i out: leaving out its equal twins too avoids re-exploring the same sums.
        j = i + 1
        while j < len(pool) and values[j] == values[i] and spend_waste[j] == spend_waste[i]:
            j += 1
        search(j, value, waste)

    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, len(pool) + 200))
    try:
        search(0, 0, 0)
    finally:
        sys.setrecursionlimit(old_limit)
    return [pool[i] for i in best] if best is not None else None


def single_random_draw(coins: Sequence[Coin], target_eff: int, params: SelectionParams,
                       rng: random.Random) -> list[Coin] | None:
    """Shuffle, then take coins until the target, the change output and a minimum change are covered."""
    pool = [c for c in coins if params.effective_value(c) > 0]
    rng.shuffle(pool)
    need = target_eff + params.change_fee + params.min_change.value
    picked, value = [], 0
    for coin in pool:
        picked.append(coin)
        value += params.effective_value(coin)
        if value >= need:
            return picked
    return None


def knapsack(coins: Sequence[Coin], target_eff: int, params: SelectionParams,
             rng: random.Random) -> list[Coin] | None:
    """Core's Knapsack: the smallest single coin above the target, or a random approximate
    subset sum just above it, whichever is closer."""
    target = target_eff + params.change_fee + params.min_change.value
    smaller, lowest_larger = [], None
    for coin in coins:
        value = params.effective_value(coin)
        if value <= 0:
            continue
        if value == target_eff:
            return [coin]
        if value < target:
            smaller.append(coin)
        elif lowest_larger is None or value < params.effective_value(lowest_larger):
            lowest_larger = coin
    total_smaller = sum(params.effective_value(c) for c in smaller)
    if total_smaller == target_eff:
        return smaller
    if total_smaller < target_eff:
        return [lowest_larger] if lowest_larger is not None else None
    smaller.sort(key=params.effective_value, reverse=True)
    values = [params.effective_value(c) for c in smaller]
    goal = target if total_smaller >= target else target_eff
    best_mask = [True] * len(values)
    best_value = total_smaller
    for _ in range(KNAPSACK_ITERATIONS):
        if best_value == goal:
            break
        mask = [False] * len(values)
        value = 0
        reached = False
        for rep in range(2):
            for i, v in enumerate(values):
                if (rng.random() < 0.5 if rep == 0 else not mask[i]) and not mask[i]:
                    mask[i] = True
                    value += v
                    if value >= goal:
                        reached = True
                        if value < best_value:
                            best_value, best_mask = value, list(mask)
                        value -= v
                        mask[i] = False
            if reached:
                break
    subset = [c for c, m in zip(smaller, best_mask) if m]
    if lowest_larger is not None and params.effective_value(lowest_larger) <= best_value:
        return [lowest_larger]
    return subset


def select_coins(coins: Sequence[Coin], target: Satoshis, fixed_weight: int, params: SelectionParams,
                 rng: random.Random | None = None) -> Selection:
    """Choose coins paying `target` plus the fee for `fixed_weight` (overhead and outputs)
    and their own inputs; the candidate with the least waste wins."""
    rng = rng or random.Random()
    unique = list({c.outpoint: c for c in coins}.values())
    fixed_fee = params.fee_rate.fee_for(vsize(fixed_weight)).value
    target_eff = target.value + fixed_fee
    available = sum(max(params.effective_value(c), 0) for c in unique)
    if available < target_eff:
        raise InsufficientFunds(
            target_eff - available,
            f"insufficient funds: need {target.value} sat plus about {fixed_fee} sat of fees, "
            f"the spendable coins are worth {available} sat after their own fees: "
            f"{target_eff - available} sat missing")
    candidates: list[Selection] = []
    bnb = branch_and_bound(unique, target_eff, params)
    if bnb:
        result = finish_selection(bnb, "bnb", target, fixed_weight, params, allow_change=False)
        if result:
            candidates.append(result)
    for name, picked in (("srd", single_random_draw(unique, target_eff, params, rng)),
                         ("knapsack", knapsack(unique, target_eff, params, rng))):
        if picked:
            result = finish_selection(picked, name, target, fixed_weight, params, allow_change=True)
            if result:
                candidates.append(result)
    if not candidates:
        # Every coin at once: the last resort before refusing.
        result = finish_selection(sorted(unique, key=lambda c: -c.amount.value), "all", target, fixed_weight, params, True)
        if result is None:
            missing = target_eff - available + 1
            raise InsufficientFunds(missing, f"insufficient funds: {missing} sat missing after fees")
        candidates.append(result)
    return min(candidates, key=lambda s: (s.waste, len(s.coins)))
