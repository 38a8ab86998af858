"""Domain errors: small named classes, each with a stable machine-readable code.

`KaccyError` is the root of every error the library raises on purpose: the domain's rules
(`DomainError`) here, and each adapter's failures (the node, the database, a signer, LND)
and the configuration's in their own modules. An embedding program catches `KaccyError` and
reads `.code`; the command line prints the same code.
"""
from __future__ import annotations


class KaccyError(Exception):
    """Base of every error kaccy-bitcoin raises on purpose; `code` is stable and machine-readable."""

    code = "kaccy_error"


class InternalError(KaccyError):
    """Something unexpected (a bug, or a failure no adapter translated); `__cause__` is the original."""

    code = "internal"


class MonitorPollFailed(KaccyError):
    """A phase of a monitor round failed as a whole (the node, LND or the database did not answer,
    or a bug): an outside failure, never a refused input. The code is the first failed phase's;
    `events` are what the round's other phases committed, `failed` everything it skipped
    (application/monitor_tick.py)."""

    code = "monitor_failed"
    exit_status = 1

    def __init__(self, message: str, code: str, events: list, failed: list) -> None:  # noqa: ANN001
        super().__init__(message)
        self.code = code
        self.events = events
        self.failed = failed

    def details(self) -> dict[str, object]:
        return {"events": [e.to_dict() for e in self.events], "failed": [f.to_dict() for f in self.failed]}


class DomainError(KaccyError):
    """Base of every rule the domain refuses to break."""

    code = "domain_error"


class InvalidAmount(DomainError):
    code = "invalid_amount"


class InvalidFeeRate(DomainError):
    code = "invalid_fee_rate"


class InvalidAddress(DomainError):
    code = "invalid_address"


class InvalidTxid(DomainError):
    code = "invalid_txid"


class InvalidDerivationPath(DomainError):
    code = "invalid_derivation_path"


class InvalidExtendedKey(DomainError):
    code = "invalid_extended_key"


class InvalidNetwork(DomainError):
    code = "invalid_network"


class InvalidOrder(DomainError):
    code = "invalid_order"


class OrderConflict(DomainError):
    """The same order id was requested again with different terms."""

    code = "order_conflict"


class NotFound(DomainError):
    code = "not_found"


class InsufficientFunds(DomainError):
    code = "insufficient_funds"

    def __init__(self, missing_sat: int, message: str | None = None) -> None:
        self.missing_sat = missing_sat
        super().__init__(message or f"insufficient funds: {missing_sat} sat missing")


class DustOutput(DomainError):
    code = "dust_output"


class IllegalTransition(DomainError):
    """A trigger that the machine does not allow from its current state."""

    code = "illegal_transition"

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        self.machine = machine
        self.state = state
        self.trigger = trigger
        super().__init__(f"{machine}: trigger '{trigger}' is not allowed in state {state}")


class CoinsReserved(DomainError):
    """Another withdrawal reserved one of these coins first."""

    code = "coins_reserved"


class ConcurrentUpdate(DomainError):
    """Another unit of work changed the same aggregate since this one read it; retry."""

    code = "concurrent_update"


class WithdrawalStateError(DomainError):
    """The withdrawal is not in a state that allows what was asked."""

    code = "invalid_withdrawal_state"


class WithdrawalReplaced(DomainError):
    """The withdrawal has a replacement or a void (or lost to one): we never send it again, since
    it could still win over the transaction meant to take its place."""

    code = "withdrawal_replaced"


class LightningUnavailable(DomainError):
    """A Lightning request on a deployment without LND (KACCY_LND_REST_URL is not set)."""

    code = "lightning_unavailable"


class InvalidEventRequest(DomainError):
    """A read or acknowledgement of the event outbox with a sequence number, limit or
    consumer name it cannot take (e.g. acknowledging an event that was never committed)."""

    code = "invalid_event_request"


class FeeTooLow(DomainError):
    """A replacement that would not pay what BIP125 (rules 3 and 4) asks over what it replaces."""

    code = "fee_too_low"

    def __init__(self, minimum_sat: int, minimum_rate: str, message: str) -> None:
        self.minimum_sat = minimum_sat
        self.minimum_rate = minimum_rate
        super().__init__(message)

    def details(self) -> dict[str, object]:
        """The minimum beside the message: the least fee, and the rate it makes (`--fee-rate`)."""
        return {"minimum_fee_sat": self.minimum_sat, "minimum_fee_rate": self.minimum_rate}


class FeeRateBelowMempoolMinimum(DomainError):
    """A fee rate under what the node's mempool takes now (its minimum moves with the mempool)."""

    code = "fee_too_low"


class InvalidLightningValue(DomainError):
    """A Lightning record was given a malformed hash, index or state combination."""

    code = "invalid_lightning_value"


class InvalidApiKeyRequest(DomainError):
    code = "invalid_api_key_request"


class InvalidWebhook(DomainError):
    code = "invalid_webhook"


class InvalidWebhookUrl(InvalidWebhook):
    """A webhook URL aimed where webhooks may not go (a loopback, private, link-local... address)."""

    code = "invalid_webhook_url"


class LimitExceeded(DomainError):
    """A withdrawal that would take a user or the platform past a limit (see domain/limits.py)."""

    code = "limit_exceeded"

    def __init__(self, limit: str, limit_sat: int, remaining_sat: int, message: str) -> None:
        self.limit = limit
        self.limit_sat = limit_sat
        self.remaining_sat = remaining_sat
        super().__init__(message)

    def details(self) -> dict[str, object]:
        """What the error object carries beside its code and message."""
        return {"limit": self.limit, "limit_sat": self.limit_sat, "remaining_sat": self.remaining_sat}


class InvalidUser(DomainError):
    """A user name that cannot name a user (empty, too long, or the platform's own scope)."""

    code = "invalid_user"


class InvalidOperator(DomainError):
    """An operator action that does not say who is acting."""

    code = "invalid_operator"


class WithdrawalHeld(DomainError):
    """The risk review held the withdrawal: nothing signs it until an operator approves it."""

    code = "withdrawal_held"


class FeeTooHigh(DomainError):
    """A Lightning payout whose routing-fee limit is above the cap (KACCY_LN_MAX_FEE_PPM of its amount)."""

    code = "fee_too_high"

    def __init__(self, cap_msat: int, message: str) -> None:
        self.cap_msat = cap_msat
        super().__init__(message)

    def details(self) -> dict[str, object]:
        return {"max_fee_sat": self.cap_msat // 1000, "max_fee_msat": self.cap_msat}


class PaymentConflict(DomainError):
    """A payment hash we are already paying (held, pending, in flight) or have paid."""

    code = "payment_conflict"


class OrderClosed(DomainError):
    """The order can take no new payment request: it is paid (finalized), failed or expired."""

    code = "order_closed"


class InvoiceConflict(DomainError):
    """The order already has an open Lightning invoice for another amount."""

    code = "invoice_conflict"
class NothingToConsolidate(DomainError):
    """A consolidation would merge fewer than two coins, or would not save anything."""

    code = "nothing_to_consolidate"


class ConsolidationInProgress(DomainError):
    """The wallet's last consolidation still waits for its transaction to confirm."""

    code = "consolidation_in_progress"


class UnknownWallet(DomainError):
    """A wallet name this deployment does not have."""

    code = "unknown_wallet"


class InvalidSwap(DomainError):
    """Swap terms that cannot be: a malformed key or hash, an amount or locktime out of range."""

    code = "invalid_swap"


class SignerRequired(DomainError):
    """Swaps need their keys from the software signer's seed (KACCY_SIGNER_MNEMONIC)."""

    code = "signer_required"


class CounterScriptMismatch(DomainError):
    """The counterparty's script is not the HTLC template with the terms we agreed, or the
    output named is not its P2WSH."""

    code = "counter_script_mismatch"


class CounterHtlcNotFound(DomainError):
    code = "counter_htlc_not_found"


class CounterHtlcSpent(DomainError):
    code = "counter_htlc_spent"


class CounterHtlcUnconfirmed(DomainError):
    code = "counter_htlc_unconfirmed"

    def __init__(self, confirmations: int, min_depth: int) -> None:
        self.confirmations, self.min_depth = confirmations, min_depth
        super().__init__(f"the counter HTLC has {confirmations} confirmation(s); {min_depth} are required "
                         "(KACCY_SWAP_MIN_DEPTH)")

    def details(self) -> dict[str, object]:
        return {"confirmations": self.confirmations, "min_depth": self.min_depth}


class CounterAmountTooLow(DomainError):
    code = "counter_amount_too_low"

    def __init__(self, amount_sat: int, receive_sat: int) -> None:
        self.amount_sat, self.receive_sat = amount_sat, receive_sat
        super().__init__(f"the counter HTLC holds {amount_sat} sat, less than the {receive_sat} sat agreed")

    def details(self) -> dict[str, object]:
        return {"amount_sat": self.amount_sat, "receive_sat": self.receive_sat}


class UnsafeTimeout(DomainError):
    """The counterparty's lock would expire too soon after ours."""

    code = "unsafe_timeout"

    def __init__(self, counter_locktime: int, our_locktime: int, safety_blocks: int) -> None:
        self.counter_locktime, self.our_locktime, self.safety_blocks = counter_locktime, our_locktime, safety_blocks
        super().__init__(f"the counter HTLC's locktime {counter_locktime} is below our locktime {our_locktime} "
                         f"plus {safety_blocks} safety blocks (KACCY_SWAP_SAFETY_BLOCKS)")

    def details(self) -> dict[str, object]:
        return {"counter_locktime": self.counter_locktime, "our_locktime": self.our_locktime,
                "safety_blocks": self.safety_blocks}


class PreimageUnknown(DomainError):
    code = "preimage_unknown"


class TimelockNotReached(DomainError):
    code = "timelock_not_reached"

    def __init__(self, locktime: int, height: int) -> None:
        self.locktime, self.height = locktime, height
        super().__init__(f"our HTLC can be refunded from height {locktime}; the chain is at {height}")

    def details(self) -> dict[str, object]:
        return {"locktime": self.locktime, "height": self.height}


class HtlcAlreadySpent(DomainError):
    code = "htlc_already_spent"


class NotCancellable(DomainError):
    code = "not_cancellable"


class SwapStateError(DomainError):
    """The swap is not at a step that allows what was asked."""

    code = "invalid_swap_state"


class CounterLockRequired(DomainError):
    """The initiator's `swap redeem` without the counter lock's --counter-* options: a usage error."""

    code = "usage"


class NodesDiverged(DomainError):
    """Every Bitcoin node disagrees with the others on the chain: no withdrawal until they agree."""

    code = "nodes_diverged"
    exit_status = 1
