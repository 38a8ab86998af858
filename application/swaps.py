"""Use cases of atomic swaps (docs/swaps.md): initiate, accept, participate, redeem, refund,
cancel, show, list.

Our lock is funded through the transaction manager (limits, risk, audit: a withdrawal of
kind `swap`), signed by the software signer and broadcast at once. A claim or a refund is
built, signed with the swap's own key and recorded (its raw transaction kept) in a unit of
work with its event before it is sent, so a crash re-sends that very transaction, never a
second one. No unit of work is open while the node or a signer is awaited.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Callable

import attrs

from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.application.transaction_manager import TransactionManager
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.application.withdrawals import BroadcastWithdrawal, RejectedByNode, SignWithdrawal
from kaccy_bitcoin.domain.bitcoin import Address, Network, OutPoint, Txid
from kaccy_bitcoin.domain.errors import (
    CounterAmountTooLow,
    CounterHtlcNotFound,
    CounterHtlcSpent,
    CounterHtlcUnconfirmed,
    CounterLockRequired,
    CounterScriptMismatch,
    HtlcAlreadySpent,
    InvalidSwap,
    NotFound,
    SignerRequired,
    SwapStateError,
    TimelockNotReached,
    UnsafeTimeout,
)
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.htlc import Htlc, check_pubkey, parse_htlc, preimage_from, sha256, spend_htlc, txid_of
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.swap_state import SwapState
from kaccy_bitcoin.domain.swaps import (
    DEFAULT_INITIATOR_TIMEOUT,
    DEFAULT_PARTICIPANT_TIMEOUT,
    INITIATOR,
    MIN_SWAP_SAT,
    PARTICIPANT,
    CounterLock,
    Swap,
)
from kaccy_bitcoin.domain.psbt_state import HELD, UNSIGNED
from kaccy_bitcoin.domain.withdrawals import SWAP
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.signer import SignerError
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory
from kaccy_bitcoin.ports.swap_chain import SwapChain, TransactionRefused
from kaccy_bitcoin.ports.swap_keys import SwapKeys

SWAP_KEY_COUNTER = -1   # the address book counter that numbers swap keys (no address chain is negative)
SCAN_BACK = 1_000   # blocks searched for a spend of a lock whose confirmation height is unknown


@attrs.frozen
class SwapSettings:
    network: Network
    min_depth: int = 1          # KACCY_SWAP_MIN_DEPTH: confirmations of the counter lock before we lock
    safety_blocks: int = 12     # KACCY_SWAP_SAFETY_BLOCKS: L1 >= L2 + this
    auto_refund: bool = True    # KACCY_SWAP_AUTO_REFUND: the monitor refunds our lock at its locktime


@attrs.define
class SwapContext:
    """What every swap use case needs. `keys`, `builder` and `manager` are providers, made
    when first used: a `swap show` needs no KACCY_XPUB, and nothing needs a seed to start."""

    uow: UnitOfWorkFactory
    chain: SwapChain
    clock: Clock
    publisher: EventPublisher
    settings: SwapSettings
    keys: Callable[[], Any]
    builder: Callable[[], Any]
    manager: Callable[[], Any] | None = None
    signing: Callable[[], Any] | None = None
    broadcasting: Callable[[], Any] | None = None

    async def swap_keys(self) -> SwapKeys:
        keys = await resolved(self.keys())
        if keys is None:
            raise SignerRequired("swaps need the software signer's seed: set KACCY_SIGNER_MNEMONIC")
        return keys

    async def wallet_builder(self, wallet: str) -> WithdrawalBuilder:
        return (await resolved(self.builder())).of(wallet)

    def load(self, uow: UnitOfWork, swap_id: str) -> Swap:
        swap = uow.swaps.get(swap_id)
        if swap is None:
            raise NotFound(f"no swap with id {swap_id!r}")
        return swap

    def read(self, swap_id: str) -> Swap:
        with self.uow.read() as u:
            return self.load(u, swap_id)

    async def commit(self, swap_id: str, apply: Callable[[Swap], list[DomainEvent]]) -> tuple[Swap, list]:
        """Reload the swap, apply one fact, save it with the fact's events, publish them."""
        async with self.uow() as u:
            swap = self.load(u, swap_id)
            events = apply(swap)
            u.swaps.save(swap)
            u.record(events)
            u.commit()
        committed = u.committed_events()
        await self.publisher.publish(committed)
        return swap, committed

    async def fund(self, swap: Swap, fee_rate: FeeRate | None, prepare: Callable[[Swap], None]) -> Swap:
        """Lock `swap.amount` in our HTLC through the transaction manager, then sign and send it.
        `prepare` sets the swap's terms in the unit of work that records the withdrawal's id."""
        htlc = swap.htlc
        assert htlc is not None
        manager: TransactionManager = await resolved(self.manager())   # type: ignore[misc]
        created = await manager([(htlc.address(self.settings.network), swap.amount.value)], fee_rate,
                                wallet=swap.wallet, kind=SWAP)

        def requested(s: Swap) -> list[DomainEvent]:
            prepare(s)
            s.funding_requested(created["withdrawal_id"])
            return [s.created(self.clock.now())] if s.version == 0 else []

        await self.commit_new_or_existing(swap, requested)
        if created["state"] == "held":
            return self.read(swap.swap_id)
        signing: SignWithdrawal = await resolved(self.signing())   # type: ignore[misc]
        signed = await signing(created["withdrawal_id"], "software")
        if signed["state"] != "signed":
            raise SignerError(f"the software signer could not sign the lock of swap {swap.swap_id}")
        broadcasting: BroadcastWithdrawal = await resolved(self.broadcasting())   # type: ignore[misc]
        sent = await broadcasting(created["withdrawal_id"])
        where = await self.find_output(Txid(sent["txid"]), htlc.script_pubkey)
        swap, _ = await self.commit(swap.swap_id, lambda s: s.funded(where, self.clock.now()))
        return swap

    async def commit_new_or_existing(self, swap: Swap, apply: Callable[[Swap], list[DomainEvent]]) -> None:
        if swap.version != 0:
            await self.commit(swap.swap_id, apply)
            return
        async with self.uow() as u:
            events = apply(swap)
            u.swaps.save(swap)
            u.record(events)
            u.commit()
        await self.publisher.publish(u.committed_events())

    async def find_output(self, txid: Txid, script_pubkey: bytes) -> OutPoint:
        count = await self.chain.output_count(txid) or 0
        for vout in range(count):
            out = await self.chain.unspent_output(OutPoint(txid, vout))
            if out is not None and out.script_pubkey == script_pubkey:
                return OutPoint(txid, vout)
        raise RejectedByNode(f"transaction {txid.value} has no unspent output paying the HTLC")

    async def learn_secret(self, swap: Swap) -> tuple[Swap, list[DomainEvent]]:
        """If the counterparty claimed our lock: the secret read from its witness, committed
        with its events (`swap_preimage_revealed`, ...); the swap as it is now."""
        htlc, where = swap.htlc, swap.funding
        if htlc is None or where is None or await self.chain.unspent_output(where) is not None:
            return swap, []
        tip = await self.chain.tip_height()
        raw = await self.chain.spender(where, swap.lock_height or max(0, tip - SCAN_BACK))
        if raw is None or (preimage := preimage_from(raw, where, htlc)) is None:
            return swap, []
        txid, now = txid_of(raw), self.clock.now
        return await self.commit(swap.swap_id, lambda s: s.preimage_seen(preimage, txid, now())
                                 + s.lock_claimed(txid, now()))

    async def new_key_index(self) -> int:
        async with self.uow() as u:
            index = u.addresses.allocate(SWAP_KEY_COUNTER)
            u.commit()
        return index

    async def spend(self, swap: Swap, htlc: Htlc, where: OutPoint, amount: Satoshis, fee_rate: FeeRate | None,
                    preimage: bytes | None, what: str) -> tuple[bytes, str]:
        """A signed claim (with `preimage`) or refund of `htlc` paying our wallet's change chain,
        which the node's mempool would accept (TransactionRefused, exit 1, otherwise)."""
        keys = await self.swap_keys()
        builder = await self.wallet_builder(swap.wallet)
        rate = await builder.fee_rate(fee_rate)
        address = await builder.change_address(f"swap {swap.swap_id} {what}")
        raw, _ = spend_htlc(htlc, where, amount, Address(address, self.settings.network).script_pubkey(), rate,
                            swap.our_pubkey, lambda h: keys.sign(swap.key_index, h), preimage)
        # Asked before it is recorded: a recorded claim or refund is the only one ever sent
        # (re-sent after a crash), so one the node would refuse must never be recorded.
        reason = await self.chain.refusal(raw)
        if reason is not None:
            raise TransactionRefused(f"the node would refuse our {what} of {where}: {reason}")
        return raw, txid_of(raw)

    async def send(self, raw: bytes) -> None:
        await self.chain.broadcast(raw)

    async def resend(self, raw: bytes) -> None:
        """Send a recorded claim or refund again; the node may already have it, mined it, or
        have seen its input spent by another transaction (then the chain decides)."""
        try:
            await self.chain.broadcast(raw)
        except TransactionRefused:
            pass


def parse_pubkey(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidSwap(f"{what} must be hex, got {text!r}") from None
    return check_pubkey(raw, what)


def parse_hash(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidSwap(f"{what} must be 32 bytes in hex (64 digits), got {text!r}")
    return raw


def parse_script(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CounterScriptMismatch(f"--counter-script must be hex, got {text!r}") from None


def _amounts(amount_sat: int, receive_sat: int) -> tuple[Satoshis, Satoshis]:
    if amount_sat < MIN_SWAP_SAT or receive_sat < MIN_SWAP_SAT:
        raise InvalidSwap(f"--amount-sat and --receive-sat must be at least {MIN_SWAP_SAT} sat")
    return Satoshis(amount_sat), Satoshis(receive_sat)


def _timeout(blocks: int) -> int:
    if not 1 <= blocks <= 52_560:
        raise InvalidSwap(f"--timeout-blocks must be from 1 to 52560, got {blocks}")
    return blocks


async def check_counter_lock(ctx: SwapContext, htlc: Htlc, where: OutPoint, receive: Satoshis,
                             min_depth: int) -> Satoshis:
    """The counterparty's lock at `where` is the P2WSH of `htlc`, unspent, deep enough and
    holds at least `receive`; its amount."""
    out = await ctx.chain.unspent_output(where)
    if out is None:
        count = await ctx.chain.output_count(where.txid)
        if count is None or where.vout >= count:
            raise CounterHtlcNotFound(f"no output {where} on the node")
        raise CounterHtlcSpent(f"the counter HTLC {where} is already spent")
    if out.script_pubkey != htlc.script_pubkey:
        raise CounterScriptMismatch(f"the output {where} is not the P2WSH of the counter script")
    if out.confirmations < min_depth:
        raise CounterHtlcUnconfirmed(out.confirmations, min_depth)
    if out.amount.value < receive.value:
        raise CounterAmountTooLow(out.amount.value, receive.value)
    return out.amount


def check_terms(htlc: Htlc, payment_hash: bytes, claimer: bytes, refunder: bytes) -> None:
    if htlc.payment_hash != payment_hash:
        raise CounterScriptMismatch("the counter script's hash is not the swap's payment hash")
    if not htlc.claimed_by(claimer):
        raise CounterScriptMismatch("the counter script's claimer is not our key")
    if not htlc.refunded_by(refunder):
        raise CounterScriptMismatch("the counter script's refunder is not the counterparty's key")


class InitiateSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, counterparty_pubkey: str, amount_sat: int, receive_sat: int,
                       timeout_blocks: int = DEFAULT_INITIATOR_TIMEOUT, fee_rate: FeeRate | None = None,
                       wallet: str | None = None) -> dict[str, Any]:
        ctx = self._ctx
        keys = await ctx.swap_keys()
        counterparty = parse_pubkey(counterparty_pubkey, "--counterparty-pubkey")
        amount, receive = _amounts(amount_sat, receive_sat)
        locktime = await ctx.chain.tip_height() + _timeout(timeout_blocks)
        index = await ctx.new_key_index()
        preimage = os.urandom(32)
        swap = Swap(uuid.uuid4().hex, INITIATOR, index, keys.public_key(index), counterparty, amount, receive,
                    wallet or "default", ctx.clock.now())
        swap.set_terms(sha256(preimage), locktime)
        swap.secret = preimage
        swap = await ctx.fund(swap, fee_rate, lambda s: None)
        return swap.view(ctx.settings.network)


class AcceptSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, counterparty_pubkey: str, amount_sat: int, receive_sat: int,
                       wallet: str | None = None) -> dict[str, Any]:
        ctx = self._ctx
        keys = await ctx.swap_keys()
        counterparty = parse_pubkey(counterparty_pubkey, "--counterparty-pubkey")
        amount, receive = _amounts(amount_sat, receive_sat)
        if wallet is not None:
            await ctx.wallet_builder(wallet)
        async with ctx.uow() as u:
            index = u.addresses.allocate(SWAP_KEY_COUNTER)
            swap = Swap(uuid.uuid4().hex, PARTICIPANT, index, keys.public_key(index), counterparty, amount, receive,
                        wallet or "default", ctx.clock.now())
            u.swaps.save(swap)
            u.record([swap.created(ctx.clock.now())])
            u.commit()
        await ctx.publisher.publish(u.committed_events())
        return {"swap_id": swap.swap_id, "role": PARTICIPANT, "state": swap.state.name,
                "our_pubkey": swap.our_pubkey.hex()}


class ParticipateSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, swap_id: str, payment_hash: str, counter_txid: str, counter_vout: int,
                       counter_script: str, timeout_blocks: int = DEFAULT_PARTICIPANT_TIMEOUT,
                       fee_rate: FeeRate | None = None) -> dict[str, Any]:
        ctx = self._ctx
        await ctx.swap_keys()
        swap = ctx.read(swap_id)
        if swap.role != PARTICIPANT or swap.state is not SwapState.INITIATED or swap.funding_withdrawal_id:
            raise SwapStateError(f"swap {swap_id} is not a participant's swap waiting for its lock "
                                 f"({swap.role}, {swap.state.name})")
        hash_ = parse_hash(payment_hash, "--payment-hash")
        script = parse_script(counter_script)
        htlc = parse_htlc(script)
        check_terms(htlc, hash_, swap.our_pubkey, swap.counterparty_pubkey)
        where = OutPoint(Txid(counter_txid), counter_vout)
        amount = await check_counter_lock(ctx, htlc, where, swap.receive, ctx.settings.min_depth)
        ours = await ctx.chain.tip_height() + _timeout(timeout_blocks)
        if htlc.locktime < ours + ctx.settings.safety_blocks:
            raise UnsafeTimeout(htlc.locktime, ours, ctx.settings.safety_blocks)
        counter = CounterLock(where, amount, script)
        swap.set_terms(hash_, ours, counter)
        funded = await ctx.fund(swap, fee_rate, lambda s: s.set_terms(hash_, ours, counter))
        return funded.view(ctx.settings.network)


class RedeemSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, swap_id: str, counter_txid: str | None = None, counter_vout: int | None = None,
                       counter_script: str | None = None, fee_rate: FeeRate | None = None) -> dict[str, Any]:
        ctx = self._ctx
        await ctx.swap_keys()
        swap = ctx.read(swap_id)
        if swap.redeem_tx is not None:   # already signed: the same transaction again, never another
            await ctx.resend(swap.redeem_tx)
            return {"swap_id": swap_id, "redeem_txid": swap.redeem_txid, "state": swap.state.name}
        if swap.state in (SwapState.CANCELLED, SwapState.REFUNDED):
            raise SwapStateError(f"swap {swap_id} is {swap.state.name}")
        if swap.role == INITIATOR:
            if counter_txid is None or counter_vout is None or counter_script is None:
                raise CounterLockRequired("the initiator's redeem needs --counter-txid, --counter-vout and "
                                          "--counter-script")
            script = parse_script(counter_script)
            htlc = parse_htlc(script)
            assert swap.payment_hash is not None
            check_terms(htlc, swap.payment_hash, swap.our_pubkey, swap.counterparty_pubkey)
            where = OutPoint(Txid(counter_txid), counter_vout)
            amount = await check_counter_lock(ctx, htlc, where, swap.receive, 0)
            counter = CounterLock(where, amount, script)
        else:
            if swap.secret is None:
                swap, _ = await ctx.learn_secret(swap)
            swap.redeem_preimage()
            counter = swap.counter
            if counter is None:
                raise SwapStateError(f"swap {swap_id} has no counter lock to redeem")
            htlc = counter.htlc
            if await ctx.chain.unspent_output(counter.outpoint) is None:
                raise CounterHtlcSpent(f"the counter HTLC {counter.outpoint} is already spent")
        raw, txid = await ctx.spend(swap, htlc, counter.outpoint, counter.amount, fee_rate, swap.redeem_preimage(),
                                    "redeem")

        def record(s: Swap) -> list[DomainEvent]:
            if s.redeem_tx is not None:
                return []
            s.counter = counter
            return s.redeemed(raw, txid, ctx.clock.now())

        swap, _ = await ctx.commit(swap_id, record)
        await ctx.send(swap.redeem_tx)   # type: ignore[arg-type]
        return {"swap_id": swap_id, "redeem_txid": swap.redeem_txid, "state": swap.state.name}


class RefundSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, swap_id: str, fee_rate: FeeRate | None = None) -> dict[str, Any]:
        ctx = self._ctx
        await ctx.swap_keys()
        swap = ctx.read(swap_id)
        htlc = swap.htlc
        if swap.funding is None or htlc is None:
            raise SwapStateError(f"swap {swap_id} has no lock of ours on chain to refund")
        height = await ctx.chain.tip_height()
        if height < htlc.locktime:
            raise TimelockNotReached(htlc.locktime, height)
        if swap.lock_spent_by is None:   # the counterparty's claim may have beaten (or replaced) our refund
            swap, _ = await ctx.learn_secret(swap)
        if swap.lock_spent_by is not None:
            raise HtlcAlreadySpent(f"our HTLC {swap.funding} was claimed by {swap.lock_spent_by}")
        if swap.refund_tx is not None:
            await ctx.resend(swap.refund_tx)
        else:
            if await ctx.chain.unspent_output(swap.funding) is None:
                raise HtlcAlreadySpent(f"our HTLC {swap.funding} is already spent")
            raw, txid = await ctx.spend(swap, htlc, swap.funding, swap.amount, fee_rate, None, "refund")
            swap, _ = await ctx.commit(swap_id, lambda s: s.refund_broadcast(raw, txid, ctx.clock.now()))
            await ctx.send(swap.refund_tx)   # type: ignore[arg-type]
        return {"swap_id": swap_id, "refund_txid": swap.refund_txid, "state": swap.state.name}


class CancelSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, swap_id: str) -> dict[str, Any]:
        ctx = self._ctx
        await ctx.swap_keys()
        now = ctx.clock.now()
        async with ctx.uow() as u:
            swap = ctx.load(u, swap_id)
            events: list[DomainEvent] = []
            w = u.withdrawals.get(swap.funding_withdrawal_id) if swap.funding_withdrawal_id else None
            if swap.funding is None and w is not None and not w.ever_signed:
                # the lock never left: its withdrawal (held, or unsigned) is cancelled with the swap
                if w.state.value in UNSIGNED + HELD:
                    w.cancel(now)
                    w.settled = True
                    u.reservations.release(w.withdrawal_id)
                    u.limits.give_back(w.withdrawal_id)
                    u.withdrawals.save(w)
                    events.append(w.event("withdrawal_cancelled", now))
                swap.funding_dropped()
            events += swap.cancel(now)
            u.swaps.save(swap)
            u.record(events)
            u.commit()
        await ctx.publisher.publish(u.committed_events())
        return swap.view(ctx.settings.network)


class ShowSwap:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, swap_id: str) -> dict[str, Any]:
        await self._ctx.swap_keys()
        return self._ctx.read(swap_id).view(self._ctx.settings.network)


class ListSwaps:
    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self, state: str | None = None) -> dict[str, Any]:
        await self._ctx.swap_keys()
        with self._ctx.uow.read() as u:
            swaps = u.swaps.all(state)
        return {"swaps": [s.view(self._ctx.settings.network) for s in swaps]}
