"""PayJoin (BIP78 v1) receiving for orders: the `pj=` of an order, answering an original with a
proposal, and following each proposal until the chain settles it (the fallback included).

Answering (`ReceivePayjoin`): the order of the token must be open and unpaid, with no earlier
proposal; the original must pass domain/payjoin.py's checks, offer no input seen before (BIP78's
probing defence), spend no coin of ours, and be accepted by the node's mempool
(`testmempoolaccept`). One confirmed, unreserved coin of the default wallet is added, signed by
the software signer; the coin's reservation, the original's inputs, the session and the event
`payjoin_proposed` commit together, before the proposal is answered.

Following (`FollowPayjoins`, a monitor phase): a proposal whose transaction is in the mempool or
a block is joined; an original the sender broadcast itself supersedes it; when neither, nor any
other spend of the sender's inputs, is seen `fallback_after` seconds after the proposal, the
original is broadcast (`payjoin_fallback_broadcast`). Our coin stays reserved until the
transaction that spent the sender's inputs has a confirmation: until then the proposal (which
our signature makes valid) could still replace it.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, Callable, Mapping

from kaccy_bitcoin.domain.bitcoin import Address, AddressType
from kaccy_bitcoin.domain.errors import CoinsReserved, ConcurrentUpdate, NotFound
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.payjoin import (
    OurCoin, PayjoinParams, build_proposal, finish_proposal, read_original, rejected, sender_script_sigs, unavailable)
from kaccy_bitcoin.domain.payjoin_session import PayjoinRefused, PayjoinSession, holder
from kaccy_bitcoin.domain.psbt import P2SH_P2WPKH, P2TR, P2WPKH, KeyOrigin, finalize_psbt
from kaccy_bitcoin.application.payjoin_offers import PayjoinSettings
from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.ports.addresses import AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.signer import PsbtSigner
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

log = logging.getLogger(__name__)
_KINDS = {AddressType.P2WPKH: P2WPKH, AddressType.P2SH: P2SH_P2WPKH, AddressType.P2TR: P2TR}
# testmempoolaccept's reasons for an original whose inputs a block already spent
_SPENT_IN_BLOCK = ("missing-inputs", "bad-txns-inputs-missingorspent")
MAX_CANDIDATES = 20   # coins tried, smallest first, before answering not-enough-money


class ReceivePayjoin:
    """Answer `POST /pj/<token>`: the proposal (base64), or PayjoinRefused / NotFound."""

    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend, deriver: AddressDeriver,
                 signer: Callable[[], PsbtSigner], clock: Clock, publisher: EventPublisher,
                 settings: PayjoinSettings) -> None:
        self._uow, self._chain, self._deriver = uow, chain, deriver
        self._signer, self._clock, self._publisher, self._settings = signer, clock, publisher, settings

    async def __call__(self, token: str, query: Mapping[str, str], body: str) -> str:
        if self._settings.url is None:
            raise NotFound("payjoin is not enabled on this service")
        with self._uow.read() as uow:
            session = uow.payjoins.get(token)
            if session is None:
                raise NotFound("no payjoin endpoint with this token")
            request = uow.requests.get(session.order_id)
            payment = uow.payments.get(session.order_id)
        params = PayjoinParams.parse(query)
        now = self._clock.now()
        session.check_open(request, payment, now)
        network = self._settings.network
        original = read_original(network, body, Address(request.address, network).script_pubkey())
        with self._uow.read() as uow:
            if uow.payjoins.seen_inputs(original.inputs):
                raise rejected("an input of this original was offered in an earlier original")
        accepted = await self._chain.test_accept(original.raw)
        if not accepted.allowed:
            raise rejected(f"the node's mempool refuses the original: {accepted.reject_reason}")
        position = secrets.randbelow(len(original.inputs) + 1)
        for coin in await self._coins(original.inputs, request.address, original.kind):
            try:   # the smallest coin that can pay its share of the fee (a free consolidation)
                built = build_proposal(network, original, coin, params, position)
                break
            except PayjoinRefused as refused:
                if refused.error_code != "not-enough-money":
                    raise
                last = refused
        else:
            raise last
        signed = await self._signer().sign(built.psbt)
        proposal, txid = finish_proposal(network, signed.psbt, built.our_index,
                                         sender_script_sigs(network, original, built.psbt))
        async with self._uow() as uow:
            session = uow.payjoins.get(token)
            session.propose(original.psbt, original.txid, proposal, txid, coin.outpoint, coin.amount.value,
                            built.contributed_sat, original.payment_sat, now)
            try:
                uow.reservations.reserve([coin.outpoint], holder(token), now)
                uow.payjoins.record_inputs(list(original.inputs), token)
            except CoinsReserved:
                raise unavailable("our coin was taken meanwhile; try again") from None
            except ConcurrentUpdate:
                raise rejected("an input of this original was offered in an earlier original") from None
            uow.payjoins.save(session)
            uow.record(session.take_events())
            uow.commit()
        await self._publisher.publish(uow.committed_events())
        log.info("payjoin proposed for order %s: original %s, proposal %s", session.order_id, original.txid, txid)
        return proposal

    async def _coins(self, theirs: tuple, payee: str, kind: str) -> list[OurCoin]:
        """The confirmed, unreserved coins of the default wallet, smallest first (at most
        MAX_CANDIDATES of them: a small one joined is a free consolidation)."""
        ours = _KINDS.get(self._deriver.address_type)  # type: ignore[attr-defined]
        if ours is None or self._deriver.witness_script(0, 0) is not None:
            raise unavailable("this wallet's coins cannot join a payjoin")
        if kind != ours:
            raise unavailable(f"the original's inputs are {kind}; our coins are {ours}")
        utxos = await self._chain.unspent(1)
        if any(u.outpoint in set(theirs) for u in utxos):
            raise rejected("the original spends a coin of ours")
        with self._uow.read() as uow:
            reserved = uow.reservations.reserved()
        mine = sorted((u for u in utxos if u.outpoint not in reserved and u.chain in (0, 1) and u.index is not None
                       and u.address != payee and self._deriver.address(u.chain, u.index) == u.address),
                      key=lambda u: (u.amount.value, u.outpoint.txid.value, u.outpoint.vout))
        if not mine:
            raise unavailable("no confirmed coin of ours is free to join")
        fingerprint = getattr(self._signer(), "fingerprint", "00000000")
        return [OurCoin(u.outpoint, u.amount, Address(u.address, self._settings.network).script_pubkey(), ours,
                        KeyOrigin(fingerprint, self._deriver.path(u.chain, u.index),
                                  self._deriver.public_key(u.chain, u.index)))  # type: ignore[attr-defined]
                for u in mine[:MAX_CANDIDATES]]


class FollowPayjoins:
    """The monitor's phase for proposals: joined, superseded, fallback broadcast, coin released."""

    phase = "payjoins"

    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend, clock: Clock, publisher: EventPublisher,
                 settings: PayjoinSettings) -> None:
        self._uow, self._chain, self._clock = uow, chain, clock
        self._publisher, self._settings = publisher, settings

    async def __call__(self) -> list[DomainEvent]:
        return await retried(self._tick, on=ConcurrentUpdate, why="another process moved a payjoin session")

    async def _tick(self) -> list[DomainEvent]:
        with self._uow.read() as uow:
            sessions = uow.payjoins.open()
        if not sessions:
            return []
        txids = {t for s in sessions for t in (s.proposal_txid, s.original_txid) if t is not None}
        views = await self._chain.wallet_transactions(sorted(txids, key=lambda t: t.value))
        changed: list[PayjoinSession] = []
        for s in sessions:
            before = (s.state, s.released)
            await self._follow(s, views)
            if (s.state, s.released) != before:
                changed.append(s)
        if not changed:
            return []
        async with self._uow() as uow:
            for s in changed:
                uow.payjoins.save(s)
                if s.released:
                    uow.reservations.release(holder(s.token))
                uow.record(s.take_events())
            uow.commit()
        events = uow.committed_events()
        await self._publisher.publish(events)
        return events

    async def _follow(self, s: PayjoinSession, views: dict) -> None:
        now = self._clock.now()
        proposal, original = views.get(s.proposal_txid), views.get(s.original_txid)
        if _live(proposal):
            s.joined(now)
            if proposal.confirmations > 0:
                s.release(now, s.proposal_txid)
            return
        if _live(original):
            s.superseded(now, f"the original {s.original_txid} is in the mempool or a block")
            if original.confirmations > 0:
                s.release(now, s.original_txid)
            return
        if s.waiting_for_sender(now, self._settings.fallback_after):
            return
        # Neither is live: the original can go out now, unless another spend holds its inputs.
        _, raw, _ = finalize_psbt(self._settings.network, s.original or "")
        accepted = await self._chain.test_accept(raw)
        if accepted.allowed:
            if s.may_fall_back:
                await self._chain.broadcast(raw)
                s.fell_back(now)
                log.info("payjoin of order %s: no transaction seen; original %s broadcast", s.order_id,
                         s.original_txid)
            return
        if any(r in accepted.reject_reason for r in _SPENT_IN_BLOCK):
            # a block spent the sender's inputs otherwise: the proposal can never confirm
            s.superseded(now, f"the sender's inputs were spent in a block ({accepted.reject_reason})")
            s.release(now, None)
        else:   # another spend of its inputs waits in the mempool
            s.superseded(now, f"another spend of the sender's inputs ({accepted.reject_reason})")


def _live(view: Any) -> bool:  # noqa: ANN401 - a WalletTransaction or None
    return view is not None and (view.confirmations > 0 or (view.confirmations == 0 and view.in_mempool))
