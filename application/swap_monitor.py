"""The monitor's swap step: carries every swap it still follows as far as the chain allows.

For each swap, in this order (one poll may take a swap through several states, each fact
committed with its event in its own unit of work, each event id derived from the swap and
the fact, so a restart after a crash fires nothing twice):
1. our lock's withdrawal was broadcast -> the lock's outpoint recorded (`swap_funded`);
2. our lock confirmed -> LOCKED (`swap_locked`);
3. our lock spent by the counterparty's claim -> the secret read from its witness
   (`swap_preimage_revealed`; an initiator's: `swap_counterparty_claimed`); still unspent
   once the tip reaches its locktime -> our refund recorded, then sent (`swap_refund_broadcast`;
   not with KACCY_SWAP_AUTO_REFUND=off);
4. a participant who knows the secret -> its claim of the counter lock recorded, then sent
   (`swap_redeemed`);
5. our redeem confirmed -> COMPLETED (`swap_completed`); our refund confirmed -> REFUNDED
   (`swap_refunded`). A recorded claim or refund the node does not know is sent again: the
   very same transaction.

One swap that cannot be followed is skipped and reported (`monitor_item_failed`, phase
`swaps`, as the other phases' items: application/monitor_tick.py); the node not answering at
all fails the phase.
"""
from __future__ import annotations

import logging

from kaccy_bitcoin.application.monitor_tick import MonitorEvents, skipped
from kaccy_bitcoin.application.swaps import SwapContext
from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.swap_state import SwapState
from kaccy_bitcoin.domain.swaps import PARTICIPANT, Swap
from kaccy_bitcoin.domain.withdrawals import Withdrawal

log = logging.getLogger(__name__)
_SENT = (PsbtState.BROADCAST, PsbtState.CONFIRMED, PsbtState.COMPLETED)


class FollowSwaps:
    phase = "swaps"

    def __init__(self, ctx: SwapContext) -> None:
        self._ctx = ctx

    async def __call__(self) -> MonitorEvents:
        with self._ctx.uow.read() as u:
            ids = [s.swap_id for s in u.swaps.watching()]
        outcome = MonitorEvents()
        for swap_id in ids:
            try:
                outcome.extend(await self._follow(swap_id))
            except Exception as exc:  # noqa: BLE001 - one swap's trouble must not stop the others'
                failure = skipped(self.phase, swap_id, exc)   # the node down: raised, the phase fails
                failure.log()
                log.debug("swap %s: this poll could not follow it", swap_id, exc_info=True)
                outcome.failed.append(failure)
        return outcome

    async def _follow(self, swap_id: str) -> list[DomainEvent]:
        ctx, events = self._ctx, []
        now = ctx.clock.now
        swap = ctx.read(swap_id)
        tip = await ctx.chain.tip_height()
        if swap.funding is None and swap.funding_withdrawal_id is not None:
            with ctx.uow.read() as u:
                w: Withdrawal | None = u.withdrawals.get(swap.funding_withdrawal_id)
            if w is None or w.txid is None or w.state not in _SENT:
                return events
            where = await ctx.find_output(w.txid, swap.htlc.script_pubkey)   # type: ignore[union-attr]
            swap, new = await ctx.commit(swap_id, lambda s: s.funded(where, now()))
            events += new
        if swap.funding is None:
            return events
        if swap.state is SwapState.INITIATED:
            depth = await ctx.chain.confirmations(swap.funding.txid)
            if depth is not None and depth >= 1:
                swap, new = await ctx.commit(swap_id, lambda s: s.lock_confirmed(tip - depth + 1, now()))
                events += new
        if swap.lock_open:
            swap, new = await self._watch_lock(swap, tip)
            events += new
        if swap.role == PARTICIPANT and swap.secret is not None and swap.redeem_tx is None and swap.counter \
                and await ctx.chain.unspent_output(swap.counter.outpoint) is not None:   # else: nothing to claim
            raw, txid = await ctx.spend(swap, swap.counter.htlc, swap.counter.outpoint, swap.counter.amount, None,
                                        swap.secret, "redeem")
            swap, new = await ctx.commit(swap_id, lambda s: s.redeemed(raw, txid, now()))
            events += new
            await ctx.resend(swap.redeem_tx)   # type: ignore[arg-type]
        if swap.redeem_tx is not None and not swap.redeem_confirmed:
            depth = await ctx.chain.confirmations(Txid(swap.redeem_txid))   # type: ignore[arg-type]
            if depth is None:
                await ctx.resend(swap.redeem_tx)
            elif depth >= 1:
                swap, new = await ctx.commit(swap_id, lambda s: s.redeem_confirmed_now(now()))
                events += new
        if swap.refund_tx is not None and not swap.refund_confirmed and swap.lock_spent_by is None:
            depth = await ctx.chain.confirmations(Txid(swap.refund_txid))   # type: ignore[arg-type]
            if depth is None:
                await ctx.resend(swap.refund_tx)
            elif depth >= 1:
                swap, new = await ctx.commit(swap_id, lambda s: s.refund_confirmed_now(now()))
                events += new
        return events

    async def _watch_lock(self, swap: Swap, tip: int) -> tuple[Swap, list[DomainEvent]]:
        """Our lock: claimed by the counterparty (the secret learnt), or due for our refund."""
        ctx, now = self._ctx, self._ctx.clock.now
        htlc, where = swap.htlc, swap.funding
        assert htlc is not None and where is not None
        if await ctx.chain.unspent_output(where) is None:
            if swap.refund_txid is not None and (await ctx.chain.confirmations(Txid(swap.refund_txid)) or 0) >= 1:
                return swap, []   # our refund is mined: no block need be searched for another spender
            # Whoever spent it says: our refund (no secret), or the counterparty's claim, which
            # may have replaced our refund in the mempool or beaten it to a block.
            return await ctx.learn_secret(swap)
        if swap.refund_tx is None and ctx.settings.auto_refund and tip >= htlc.locktime:
            raw, txid = await ctx.spend(swap, htlc, where, swap.amount, None, None, "refund")
            swap, new = await ctx.commit(swap.swap_id, lambda s: s.refund_broadcast(raw, txid, now()))
            await ctx.resend(swap.refund_tx)   # type: ignore[arg-type]
            return swap, new
        return swap, []
