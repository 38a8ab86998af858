"""Money going out: withdrawals (a PSBT and its lifecycle) and the UTXOs they spend."""
from __future__ import annotations

import datetime as dt

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import InvalidAmount, WithdrawalStateError
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt_state import PsbtMachine, PsbtState


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


@attrs.define
class Withdrawal:
    """One outgoing transaction from creation to broadcast, persisted at every step."""

    withdrawal_id: str
    created_at: dt.datetime
    inputs: list[WithdrawalInput]
    outputs: list[WithdrawalOutput]
    fee: Satoshis
    psbt: str
    machine: PsbtMachine = attrs.field(factory=PsbtMachine)
    txid: Txid | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    reject_reason: str = ""
    child_of: str | None = None          # a CPFP child: the withdrawal whose change it spends
    rebroadcasts: int = 0
    last_rebroadcast_at: dt.datetime | None = None
    stuck_alerted: bool = False
    confirmed_reported: bool = False

    @property
    def state(self) -> PsbtState:
        return self.machine.state  # type: ignore[return-value]

    def outpoints(self) -> list[OutPoint]:
        return [i.outpoint for i in self.inputs]

    def record_signatures(self, psbt: str, complete: bool, at: dt.datetime, signer: str) -> None:
        trigger = "complete_signatures" if complete else "add_signature"
        self.machine.fire(trigger, at=at, reason=f"signed by {signer}")
        self.psbt = psbt

    def finalize(self, psbt: str, txid: Txid, at: dt.datetime) -> None:
        self.machine.fire("finalize", at=at)
        self.psbt = psbt
        self.txid = txid

    def mark_broadcast(self, at: dt.datetime) -> None:
        self.machine.fire("broadcast", at=at)

    @property
    def broadcast_at(self) -> dt.datetime | None:
        return next((t.at for t in self.machine.history if t.dest == "BROADCAST"), None)

    def rebroadcast_due(self, now: dt.datetime, first_delay: float, max_delay: float) -> bool:
        """Exponential backoff between re-submissions of a transaction the mempool lost."""
        last = self.last_rebroadcast_at or self.broadcast_at
        if last is None:
            return False
        delay = min(first_delay * 2 ** self.rebroadcasts, max_delay)
        return (now - last).total_seconds() >= delay

    def record_rebroadcast(self, now: dt.datetime) -> None:
        self.rebroadcasts += 1
        self.last_rebroadcast_at = now

    def stuck(self, now: dt.datetime, after_seconds: float) -> bool:
        """True once, when a broadcast transaction is still unconfirmed past `after_seconds`."""
        since = self.broadcast_at
        if self.stuck_alerted or since is None or (now - since).total_seconds() < after_seconds:
            return False
        self.stuck_alerted = True
        return True

    def expired(self, now: dt.datetime, ttl_seconds: float) -> bool:
        """Not broadcast within its time to live: its coins should go back to the pool."""
        waiting = self.state.name in ("CREATED", "PARTIALLY_SIGNED", "SIGNED")
        return waiting and (now - self.created_at).total_seconds() >= ttl_seconds

    def cancel(self, at: dt.datetime) -> None:
        """Reject before broadcast; a broadcast transaction can only be replaced (bump)."""
        if self.state is PsbtState.BROADCAST:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is already broadcast: "
                                       "use `withdraw bump` to replace it")
        self.reject("cancelled", at)

    def require_broadcast(self, action: str) -> Txid:
        """The txid of a broadcast withdrawal, for actions that only make sense on one."""
        if self.state is not PsbtState.BROADCAST or self.txid is None:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} is {self.state.name.lower()}: "
                                       f"only a broadcast withdrawal can be {action}")
        if self.replaced_by:
            raise WithdrawalStateError(f"withdrawal {self.withdrawal_id} was already replaced by {self.replaced_by}")
        return self.txid

    def reject(self, reason: str, at: dt.datetime) -> None:
        self.machine.fire("reject", at=at, reason=reason)
        self.reject_reason = reason
