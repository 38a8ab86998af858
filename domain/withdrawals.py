"""Money going out: withdrawals (a PSBT and its lifecycle) and the UTXOs they spend.

The rule behind every method here: once a transaction is signed it may be on the
network, so nothing but the chain can make its coins free again. Before signing, a
withdrawal can be cancelled and its coins go back to the pool; after signing, the only
way out is a void (a replacement paying the same inputs back to us) or the chain.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Sequence

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid, transaction_id
from kaccy_bitcoin.domain.audit import SYSTEM
from kaccy_bitcoin.domain.errors import InvalidAmount, WithdrawalHeld, WithdrawalReplaced, WithdrawalStateError
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.withdrawal_payjoin import PayjoinSend
from kaccy_bitcoin.domain.psbt_state import HELD, UNSIGNED, PsbtMachine, PsbtState
from kaccy_bitcoin.domain.risk import NO_RISK, RiskAssessment


@attrs.frozen
class Utxo:
    """An unspent output of the platform's wallet, with where its key lives."""

    outpoint: OutPoint
    amount: Satoshis
    address: str
    confirmations: int
    chain: int | None = None   # 0 receive, 1 change
    index: int | None = None


@attrs.frozen
class WithdrawalOutput:
    address: str
    amount: Satoshis
    change: bool = False

    def __attrs_post_init__(self) -> None:
        if self.amount.value <= 0:
            raise InvalidAmount(f"output to {self.address}: amount must be positive")


@attrs.frozen
class WithdrawalInput:
    outpoint: OutPoint
    amount: Satoshis
    chain: int | None = None   # where its key lives, kept because finalizing drops it from the PSBT
    index: int | None = None


PAYOUT, VOID, CPFP = "payout", "void", "cpfp"
CONSOLIDATION = "consolidation"   # merges our own coins into one output of our change chain
SWAP = "swap"                     # locks coins in an atomic swap's HTLC (domain/swaps.py)

# The node's reasons for refusing a transaction that say nothing about the transaction itself,
# only about the mempool at that moment: the same transaction may be sent again later.
TRANSIENT_REJECTIONS = ("min relay fee not met", "mempool min fee not met", "too-long-mempool-chain",
                        "mempool full")


@attrs.define
class Withdrawal:
    """One outgoing transaction from creation until the chain settles it, persisted at every step.

    A *family* is a withdrawal and the replacements built on it (`replaces` points at the
    one replaced; a void is a replacement that pays our own change chain): at most one
    member can confirm, and until one does none of them gives its coins back.
    """

    withdrawal_id: str
    created_at: dt.datetime
    inputs: list[WithdrawalInput]
    outputs: list[WithdrawalOutput]
    fee: Satoshis
    psbt: str
    machine: PsbtMachine = attrs.field(factory=PsbtMachine)
    txid: Txid | None = None
    replaces: str | None = None          # the family member this one replaces (RBF, or a void)
    replaced_by: str | None = None       # the replacement the node accepted in its place
    reject_reason: str = ""
    child_of: str | None = None          # a CPFP child: the withdrawal whose change it spends
    kind: str = PAYOUT
    rebroadcasts: int = 0
    last_rebroadcast_at: dt.datetime | None = None
    stuck_alerted: bool = False
    confirmations: int = 0
    conflicted_by: Txid | None = None    # the transaction that won over this one
    settled: bool = False                # the chain's verdict is final: nothing more to watch
    user: str | None = None              # whose withdrawal (limits and risk history), if anyone's
    risk: RiskAssessment = NO_RISK       # the risk review's verdict when it was created
    approved_by: str | None = None       # the operator who released it from HELD
    wallet: str = "default"              # the wallet whose coins it spends and whose change it makes
    signed_tx: str | None = None         # the signed transaction as the network saw it (hex), to resubmit
    payjoin: PayjoinSend | None = None   # sent as a BIP78 payjoin (or meant to be): see `follow_proposal`
    version: int = attrs.field(default=0, eq=False)   # storage's optimistic-concurrency token

    # -- reading ---------------------------------------------------------------
    @property
    def state(self) -> PsbtState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.state.name.lower()

    def outpoints(self) -> list[OutPoint]:
        return [i.outpoint for i in self.inputs]

    @property
    def payouts(self) -> list[WithdrawalOutput]:
        """What we pay out: the non-change outputs (of the original, for a payjoin whose proposal
        is followed: the receiver's own contribution to its output is not ours)."""
        if self.payjoin is not None and self.payjoin.used:
            return [WithdrawalOutput(a, Satoshis(v), c) for a, v, c in self.payjoin.original_outputs if not c]
        return [o for o in self.outputs if not o.change]

    @property
    def payout_total(self) -> Satoshis:
        return Satoshis(sum(o.amount.value for o in self.payouts))

    def spent(self) -> list[tuple[OutPoint, Satoshis]]:
        """Every input its PSBT spends, in order: ours, and a followed payjoin proposal's receiver's."""
        if self.payjoin is not None and self.payjoin.used:
            return list(self.payjoin.inputs)
        return [(i.outpoint, i.amount) for i in self.inputs]

    @property
    def ever_signed(self) -> bool:
        """Whether a fully signed transaction ever existed (and so may be on the network)."""
        return any(t.dest == "SIGNED" or t.trigger == "seen" for t in self.machine.history)

    @property
    def signable_since(self) -> dt.datetime:
        """When it could first be signed: an operator's approval of a held one, else its creation."""
        return next((t.at for t in reversed(self.machine.history) if t.trigger == "approve"), self.created_at)

    @property
    def broadcast_at(self) -> dt.datetime | None:
        return next((t.at for t in reversed(self.machine.history) if t.dest == "BROADCAST"), None)

    @property
    def pays_nothing(self) -> bool:
        """Known never to pay out: expired, voided (its inputs went back to us), or cancelled or
        replaced before it was ever signed (a replacement of it needs it signed first). Once
        settled, its amount no longer counts against the limits."""
        if self.state in (PsbtState.EXPIRED, PsbtState.VOIDED):
            return True
        return self.state in (PsbtState.REJECTED, PsbtState.REPLACED) and not self.ever_signed

    @property
    def rejected_transiently(self) -> bool:
        """Refused by the node for a reason of the mempool's, not of the transaction's (a fee
        below the node's floor, a chain of unconfirmed ancestors too long, a full mempool)."""
        return (self.state is PsbtState.REJECTED and self.ever_signed
                and any(reason in self.reject_reason for reason in TRANSIENT_REJECTIONS))

    @property
    def abandoned_unsigned(self) -> bool:
        """Cancelled or expired before we saw it signed: its coins went back to the pool, but its
        PSBT was handed out and may still be signed elsewhere until one of its inputs is spent."""
        return self.state in (PsbtState.REJECTED, PsbtState.EXPIRED) and not self.ever_signed

    # -- the owner's steps -------------------------------------------------------
    def review(self, risk: RiskAssessment, review_score: int, at: dt.datetime) -> DomainEvent | None:
        """Record the risk review's verdict; at or above `review_score` the withdrawal is HELD
        (the event `withdrawal_held` tells the operators)."""
        self.risk = risk
        if not risk.held(review_score):
            return None
        self.machine.fire("hold", at=at, reason=f"risk score {risk.score}: {', '.join(risk.reasons)}")
        return self.event("withdrawal_held", at, risk=risk.to_dict(), user=self.user)

    def approve(self, operator: str, at: dt.datetime) -> DomainEvent:
        """An operator releases a held withdrawal: it can be signed from now on."""
        if self.state is not PsbtState.HELD:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: only a held withdrawal "
                                       "can be approved")
        self.machine.fire("approve", at=at, reason=f"approved by {operator}")
        self.approved_by = operator
        return self.event("withdrawal_approved", at, actor=operator, risk=self.risk.to_dict())

    def require_signable(self) -> None:
        if self.state is PsbtState.HELD:
            raise WithdrawalHeld(f"withdrawal {self.withdrawal_id} is held by the risk review (score "
                                 f"{self.risk.score}: {', '.join(self.risk.reasons)}): an operator must "
                                 "`withdraw approve` it before it can be signed")
        if self.state.value not in UNSIGNED:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: only a created or "
                                       "partially signed withdrawal takes signatures")

    def record_signatures(self, psbt: str, complete: bool, at: dt.datetime, signer: str,
                          txid: Txid | None = None) -> None:
        trigger = "complete_signatures" if complete else "add_signature"
        self.machine.fire(trigger, at=at, reason=f"signed by {signer}")
        self.psbt = psbt
        if txid is not None:
            self.txid = txid

    def finalize(self, psbt: str, txid: Txid, at: dt.datetime) -> None:
        self.machine.fire("finalize", at=at)
        self.psbt = psbt
        self.txid = txid

    # -- a payjoin (BIP78) ------------------------------------------------------------
    def start_payjoin(self) -> None:
        """The finalized original is about to be handed to a payjoin receiver."""
        if self.state is not PsbtState.FINALIZED or self.txid is None:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: only a finalized "
                                       "withdrawal can be offered as a payjoin original")
        self.payjoin = PayjoinSend(self.txid)

    def payjoin_fell_back(self, reason: str) -> None:
        """The original is sent instead of a proposal, for `reason`."""
        if self.payjoin is not None and not self.payjoin.used:
            self.payjoin = attrs.evolve(self.payjoin, fallback_reason=reason)

    def follow_proposal(self, psbt: str, txid: Txid, raw_tx: bytes, inputs: Sequence[tuple[OutPoint, Satoshis]],
                        outputs: Sequence[WithdrawalOutput], fee: Satoshis, contribution: Satoshis) -> None:
        """From now on this withdrawal is the checked, signed payjoin proposal: its PSBT, txid,
        transaction, outputs and fee; the original's are kept to go back to (`follow_original`)."""
        if self.payjoin is None or self.payjoin.used or self.state is not PsbtState.FINALIZED:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: no payjoin original "
                                       "waits for a proposal")
        self.payjoin = attrs.evolve(
            self.payjoin, proposal_txid=txid, inputs=tuple(inputs), original_psbt=self.psbt,
            original_outputs=tuple((o.address, o.amount.value, o.change) for o in self.outputs),
            original_fee=self.fee, original_tx=self.signed_tx, contribution=contribution, fallback_reason=None)
        self.psbt, self.txid, self.signed_tx = psbt, txid, raw_tx.hex()
        self.outputs, self.fee = list(outputs), fee

    def follow_original(self, reason: str) -> None:
        """The original (not the proposal) is the transaction to follow: it reached the network
        (the receiver holds it and may send it) or the proposal could not be sent."""
        p = self.payjoin
        if p is None or not p.used or p.original_psbt is None or p.original_fee is None:
            return
        self.psbt, self.txid, self.signed_tx = p.original_psbt, p.original_txid, p.original_tx
        self.outputs = [WithdrawalOutput(a, Satoshis(v), c) for a, v, c in p.original_outputs]
        self.fee = p.original_fee
        self.payjoin = PayjoinSend(p.original_txid, reason)

    def mark_broadcast(self, at: dt.datetime) -> None:
        self.machine.fire("broadcast", at=at)

    def reject(self, reason: str, at: dt.datetime) -> None:
        """The node refused the finalized transaction; its coins stay held (it is signed)."""
        self.machine.fire("reject", at=at, reason=reason)
        self.reject_reason = reason

    def superseded(self, replacements: Sequence[Withdrawal]) -> bool:
        """Whether something took this withdrawal's place: a replacement or a void built on it
        (`replacements`, see `built_on`), unless given up before it was signed (cancelled or
        expired), or a sibling that won its family's race."""
        return (self.state in (PsbtState.REPLACED, PsbtState.VOIDED) or bool(self.replaced_by)
                or any(not r.abandoned_unsigned for r in replacements))

    def require_not_replaced(self, replacements: Sequence[Withdrawal]) -> None:
        """Refuse to send a withdrawal that something took the place of (`superseded`). A
        transaction of ours that could still win over the one meant to take its place is never
        sent by us: not by `withdraw broadcast`, not by the tracker's resubmission."""
        taking_over = [r.withdrawal_id for r in replacements if not r.abandoned_unsigned]
        if self.superseded(replacements):
            by = self.replaced_by or (taking_over[0] if taking_over else "a sibling that confirmed")
            raise WithdrawalReplaced(f"withdrawal {self.withdrawal_id} is {self.name} and was replaced or voided "
                                     f"by {by}: it is never sent again")

    def require_sendable(self, at: dt.datetime) -> None:
        """Only a finalized withdrawal is sent; one the node refused for a passing reason (see
        `rejected_transiently`) is finalized again, to be sent once more."""
        if self.state is PsbtState.REJECTED and self.ever_signed:
            if not self.rejected_transiently:
                raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} was {self.reject_reason or 'rejected'}: "
                                           "not a refusal that passes; `withdraw void` spends its inputs back to us")
            self.machine.fire("resend", at=at, reason=f"sent again after: {self.reject_reason}")
        if self.state is not PsbtState.FINALIZED:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: only a signed withdrawal "
                                       "can be broadcast")

    def cancel(self, at: dt.datetime) -> None:
        """Withdraw an unsigned withdrawal; a signed one may be on the network: void it instead."""
        if self.state.value not in UNSIGNED + HELD:
            if self.state in (PsbtState.CONFIRMED, PsbtState.COMPLETED):
                why = "its transaction is confirmed"
            elif self.state in (PsbtState.REJECTED, PsbtState.EXPIRED) and not self.ever_signed:
                why = "it is already " + self.name
            else:
                why = ("its transaction is signed and may be on the network: use `withdraw void` to spend "
                       "its inputs back to us, or `withdraw bump` to replace it")
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: cannot cancel, {why}")
        self.machine.fire("cancel", at=at, reason="cancelled")
        self.reject_reason = "cancelled"

    def expire(self, now: dt.datetime, ttl_seconds: float) -> DomainEvent | None:
        """A withdrawal not signed within its time to live, counted from when it could be signed
        (its creation, or the approval of a held one), gives its coins back. A held one waits for
        its operator (approve or cancel), however long; a signed one never expires: it can only
        be voided."""
        if self.state.value not in UNSIGNED or (now - self.signable_since).total_seconds() < ttl_seconds:
            return None
        self.machine.fire("expire", at=now, reason="not signed within its time to live")
        self.reject_reason = "expired before signing"
        return self.event("withdrawal_expired", now)

    def require_bumpable(self) -> Txid:
        """The txid of a broadcast withdrawal (or one the node refused for a passing reason: see
        `rejected_transiently`) that no accepted replacement has taken over."""
        if (self.state is not PsbtState.BROADCAST and not self.rejected_transiently) or self.txid is None:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: only a broadcast "
                                       "withdrawal waiting in the mempool (or one the node refused for a passing "
                                       "reason) can be replaced")
        if self.replaced_by:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} was already replaced by "
                                       f"{self.replaced_by}: bump that one")
        return self.txid

    def require_voidable(self) -> None:
        if self.state.value in UNSIGNED + HELD:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: nothing was signed, "
                                       "use `withdraw cancel`")
        if self.state in (PsbtState.CONFIRMED, PsbtState.COMPLETED):
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: too late to void")
        if self.state in (PsbtState.REPLACED, PsbtState.VOIDED, PsbtState.CONFLICTED) or not self.ever_signed:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.name}: nothing left to void")
        if self.kind == VOID:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is itself a void: "
                                       "use `withdraw bump` to raise its fee")

    # -- what the chain says (see domain/withdrawal_tracking.py) -------------------
    def chain_moves(self, trigger: str, at: dt.datetime, reason: str = "") -> bool:
        """Fire `trigger` if the machine allows it from here; report whether it moved."""
        if not self.machine.can(trigger):
            return False
        self.machine.fire(trigger, at=at, reason=reason)
        return True

    def rebroadcast_due(self, now: dt.datetime, first_delay: float, max_delay: float) -> bool:
        """Exponential backoff between re-submissions of a transaction the mempool lost."""
        last = self.last_rebroadcast_at or self.broadcast_at
        if last is None:
            return False
        delay = min(first_delay * 2 ** self.rebroadcasts, max_delay)
        return (now - last).total_seconds() >= delay

    def keep_signed(self, raw_tx: bytes) -> None:
        """Keep the signed transaction the network saw (whoever signed and sent it): what is
        resubmitted if the mempool loses it, since the stored PSBT may never have been signed here."""
        if self.txid is None or transaction_id(raw_tx) != self.txid:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id}: the transaction {transaction_id(raw_tx)} "
                                       f"is not its own ({self.txid.value if self.txid else 'no txid yet'})")
        self.signed_tx = raw_tx.hex()

    def record_rebroadcast(self, now: dt.datetime) -> None:
        self.rebroadcasts += 1
        self.last_rebroadcast_at = now

    def stuck(self, now: dt.datetime, after_seconds: float) -> bool:
        """True once, when a broadcast transaction is still unconfirmed past `after_seconds`."""
        since = self.broadcast_at
        if (self.stuck_alerted or self.state is not PsbtState.BROADCAST or since is None
                or (now - since).total_seconds() < after_seconds):
            return False
        self.stuck_alerted = True
        return True

    def replacement_kind(self) -> str:
        """What a replacement of this withdrawal is: a void stays a void (it pays our own change
        chain, and its win voids the original), anything else is a payout."""
        return VOID if self.kind == VOID else PAYOUT

    def event(self, kind: str, at: dt.datetime, actor: str = SYSTEM, **data: Any) -> DomainEvent:
        """An event about this withdrawal; its id names the move it follows, so re-deriving the
        same fact gives the same id."""
        body = {"withdrawal_id": self.withdrawal_id, "state": self.name, "amount_sat": self.payout_total.value,
                "fee_sat": self.fee.value, "txid": self.txid.value if self.txid else None, **data}
        return DomainEvent(f"{kind}:{self.withdrawal_id}:{len(self.machine.history)}", kind,
                           self.withdrawal_id, at, body, actor)


def coins_to_spend_first(abandoned: Iterable[Withdrawal], unspent: Iterable[OutPoint],
                         available: Iterable[OutPoint]) -> list[OutPoint]:
    """One coin of each abandoned withdrawal (see `Withdrawal.abandoned_unsigned`) that could still
    be signed and broadcast elsewhere: spending it makes that late broadcast conflict instead of
    paying twice. Abandoned is dangerous while every one of its inputs is unspent and none is held
    by a withdrawal of ours (that one already spends it); the coin picked is its largest free one."""
    unspent, available = set(unspent), set(available)
    first: list[OutPoint] = []
    for w in abandoned:
        ins = {i.outpoint: i.amount.value for i in w.inputs}
        if not w.abandoned_unsigned or not ins or not set(ins) <= unspent or not set(ins) <= available:
            continue
        if set(ins) & set(first):
            continue   # already killed by a coin picked for another one
        first.append(max(ins, key=lambda op: (ins[op], op.txid.value, op.vout)))
    return first


def built_on(w: Withdrawal, candidates: Sequence[Withdrawal]) -> list[Withdrawal]:
    """The withdrawals among `candidates` built on `w`: its replacements and voids, theirs, and so on."""
    found: list[Withdrawal] = []
    ids = {w.withdrawal_id}
    grew = True
    while grew:
        grew = False
        for x in candidates:
            if x.replaces in ids and x.withdrawal_id not in ids:
                ids.add(x.withdrawal_id)
                found.append(x)
                grew = True
    return found
