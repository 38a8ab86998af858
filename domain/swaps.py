"""An atomic swap: one party's record of a hash-time-locked exchange with a counterparty.

The record (`Swap`) holds the persisted data; its position in the swap machine
(domain/swap_state.py: INITIATED -> LOCKED -> COMPLETED | REFUNDED, INITIATED -> CANCELLED)
is its `machine`. Each method applies one fact (our lock funded, confirmed, claimed by the
counterparty; our redeem or refund recorded or confirmed) and returns the events it caused,
each with an id derived from the swap and the fact, so re-deriving a fact never yields a
second event. An initiator's COMPLETED swap still watches its own lock: the counterparty's
claim of it, or our refund of it at its locktime, is recorded as data (the state stays
COMPLETED).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint
from kaccy_bitcoin.domain.errors import NotCancellable, PreimageUnknown, SwapStateError
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.htlc import Htlc, parse_htlc, sha256
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.swap_state import SwapMachine, SwapState

INITIATOR, PARTICIPANT = "initiator", "participant"
DEFAULT_INITIATOR_TIMEOUT = 144   # blocks: HTLC1, the longer lock
DEFAULT_PARTICIPANT_TIMEOUT = 72  # blocks: HTLC2, which must expire well before HTLC1
MIN_SWAP_SAT = 546                # what each side locks or receives at least: above any output's dust


@attrs.define
class CounterLock:
    """The counterparty's HTLC that we may claim."""

    outpoint: OutPoint
    amount: Satoshis
    script: bytes

    @property
    def htlc(self) -> Htlc:
        return parse_htlc(self.script)

    def view(self) -> dict[str, Any]:
        return {"txid": self.outpoint.txid.value, "vout": self.outpoint.vout, "amount_sat": self.amount.value,
                "locktime": self.htlc.locktime}


@attrs.define
class Swap:
    swap_id: str
    role: str
    key_index: int                 # our key: docs/swaps.md gives its BIP32 path
    our_pubkey: bytes
    counterparty_pubkey: bytes
    amount: Satoshis               # what we lock
    receive: Satoshis              # what we expect in the counterparty's lock
    wallet: str
    created_at: dt.datetime
    machine: SwapMachine = attrs.field(factory=SwapMachine, eq=False)   # compared by its history
    payment_hash: bytes | None = None
    secret: bytes | None = None             # the preimage, once we know it
    preimage_txid: str | None = None        # the transaction that revealed it (ours for the initiator)
    locktime: int | None = None             # our lock's
    funding_withdrawal_id: str | None = None
    funding: OutPoint | None = None
    lock_height: int | None = None          # the block our lock confirmed in
    lock_spent_by: str | None = None        # the counterparty's claim of our lock
    counter: CounterLock | None = None
    redeem_tx: bytes | None = None          # signed, kept so a crash re-sends it, never another
    redeem_txid: str | None = None
    redeem_confirmed: bool = False
    refund_tx: bytes | None = None
    refund_txid: str | None = None
    refund_confirmed: bool = False
    version: int = attrs.field(default=0, eq=False)   # storage's optimistic-concurrency token

    @property
    def state(self) -> SwapState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def htlc(self) -> Htlc | None:
        """Our lock: the counterparty claims it with the secret, we refund it after `locktime`."""
        if self.payment_hash is None or self.locktime is None:
            return None
        return Htlc.of(self.payment_hash, self.counterparty_pubkey, self.our_pubkey, self.locktime)

    @property
    def lock_open(self) -> bool:
        """Our lock is funded and neither claimed by the counterparty nor refunded for good."""
        return self.funding is not None and self.lock_spent_by is None and not self.refund_confirmed

    @property
    def watching(self) -> bool:
        """The monitor still has something to follow for this swap."""
        if self.state in (SwapState.CANCELLED, SwapState.REFUNDED):
            return False
        if self.funding is None:
            return self.funding_withdrawal_id is not None
        return (self.lock_open or (self.redeem_txid is not None and not self.redeem_confirmed)
                or (self.state is SwapState.LOCKED)
                or (self.role == PARTICIPANT and self.secret is not None and self.redeem_txid is None))

    # -- facts ---------------------------------------------------------------------------
    def event(self, kind: str, at: dt.datetime, **data: Any) -> DomainEvent:
        return DomainEvent(f"{kind}:{self.swap_id}", kind, self.swap_id, at,
                           {"swap_id": self.swap_id, "state": self.state.name, **data})

    def created(self, at: dt.datetime) -> DomainEvent:
        return self.event("swap_initiated", at, role=self.role)

    def set_terms(self, payment_hash: bytes, locktime: int, counter: CounterLock | None = None) -> None:
        if self.funding_withdrawal_id is not None or self.state is not SwapState.INITIATED:
            raise SwapStateError(f"swap {self.swap_id} has already locked its coins")
        self.payment_hash, self.locktime, self.counter = payment_hash, locktime, counter

    def funding_requested(self, withdrawal_id: str) -> None:
        self.funding_withdrawal_id = withdrawal_id

    def funded(self, outpoint: OutPoint, at: dt.datetime) -> list[DomainEvent]:
        if self.funding is not None:
            return []
        self.funding = outpoint
        return [self.event("swap_funded", at, txid=outpoint.txid.value, vout=outpoint.vout)]

    def lock_confirmed(self, height: int, at: dt.datetime) -> list[DomainEvent]:
        if self.state is not SwapState.INITIATED or self.funding is None:
            return []
        self.lock_height = height
        self.machine.fire("lock", at=at, reason=f"our lock confirmed at height {height}")
        return [self.event("swap_locked", at, txid=self.funding.txid.value, height=height)]

    def preimage_seen(self, preimage: bytes, txid: str, at: dt.datetime) -> list[DomainEvent]:
        """A transaction `txid` revealed the secret (the counterparty's claim of our lock)."""
        if self.payment_hash is None or sha256(preimage) != self.payment_hash:
            return []
        events = []
        if self.preimage_txid is None:
            self.secret, self.preimage_txid = preimage, txid
            events.append(self.event("swap_preimage_revealed", at, txid=txid))
        return events

    def lock_claimed(self, txid: str, at: dt.datetime) -> list[DomainEvent]:
        if self.lock_spent_by is not None:
            return []
        self.lock_spent_by = txid
        if self.role == INITIATOR:
            return [self.event("swap_counterparty_claimed", at, txid=txid)]
        return []

    def redeem_preimage(self) -> bytes:
        if self.secret is None:
            raise PreimageUnknown(f"swap {self.swap_id}: the secret is not known yet")
        return self.secret

    def redeemed(self, raw_tx: bytes, txid: str, at: dt.datetime) -> list[DomainEvent]:
        """Our claim of the counter lock is signed and about to be sent."""
        if self.redeem_txid is not None:
            return []
        self.redeem_tx, self.redeem_txid = raw_tx, txid
        events = []
        if self.role == INITIATOR and self.preimage_txid is None:
            self.preimage_txid = txid
        events.append(self.event("swap_redeemed", at, txid=txid))
        return events

    def redeem_confirmed_now(self, at: dt.datetime) -> list[DomainEvent]:
        if self.redeem_confirmed or self.redeem_txid is None or self.state is not SwapState.LOCKED:
            return []
        self.redeem_confirmed = True
        self.machine.fire("complete", at=at, reason=f"our redeem {self.redeem_txid} confirmed")
        return [self.event("swap_completed", at, txid=self.redeem_txid)]

    def refund_broadcast(self, raw_tx: bytes, txid: str, at: dt.datetime) -> list[DomainEvent]:
        if self.refund_txid is not None:
            return []
        self.refund_tx, self.refund_txid = raw_tx, txid
        return [self.event("swap_refund_broadcast", at, txid=txid)]

    def refund_confirmed_now(self, at: dt.datetime) -> list[DomainEvent]:
        if self.refund_confirmed or self.refund_txid is None:
            return []
        self.refund_confirmed = True
        if self.state is SwapState.LOCKED and self.redeem_txid is None:
            self.machine.fire("refund", at=at, reason=f"our refund {self.refund_txid} confirmed")
        return [self.event("swap_refunded", at, txid=self.refund_txid)]

    def funding_dropped(self) -> None:
        """Our lock's withdrawal will never be sent (cancelled or expired unsigned)."""
        if self.funding is None:
            self.funding_withdrawal_id = None

    def cancel(self, at: dt.datetime) -> list[DomainEvent]:
        if self.funding_withdrawal_id is not None or self.funding is not None or not self.machine.can("cancel"):
            raise NotCancellable(f"swap {self.swap_id} is {self.state.name} and its lock was funded: "
                                 "it can only be refunded after its locktime")
        self.machine.fire("cancel", at=at, reason="cancelled before any coin was locked")
        return [self.event("swap_cancelled", at)]

    # -- reading ---------------------------------------------------------------------------
    def view(self, network: Any) -> dict[str, Any]:
        htlc = self.htlc
        revealed = self.preimage_txid is not None and self.secret is not None
        return {
            "swap_id": self.swap_id, "role": self.role, "state": self.state.name,
            "payment_hash": self.payment_hash.hex() if self.payment_hash else None,
            "preimage": self.secret.hex() if revealed else None,   # type: ignore[union-attr]
            "our_pubkey": self.our_pubkey.hex(), "counterparty_pubkey": self.counterparty_pubkey.hex(),
            "locktime": self.locktime,
            "witness_script": bytes(htlc.script).hex() if htlc else None,
            "htlc_address": htlc.address(network) if htlc else None,
            "amount_sat": self.amount.value, "receive_sat": self.receive.value,
            "funding_txid": self.funding.txid.value if self.funding else None,
            "funding_vout": self.funding.vout if self.funding else None,
            "redeem_txid": self.redeem_txid, "refund_txid": self.refund_txid,
            "counter": self.counter.view() if self.counter else None,
        }
