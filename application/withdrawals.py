"""Use cases for money going out: create, sign, broadcast, cancel, void, show a withdrawal.

No unit of work stays open while the node, a signer or a person is being waited on: a use
case reads in one short unit of work, does the slow part with none open, and writes in
another, where the withdrawal's version check refuses the write if another process changed
it meanwhile. Coins are reserved in the same unit of work that records the withdrawal, so
two withdrawals never spend the same coin; FINALIZED is committed before anything reaches
the network, so a crash between the two is found again (as `finalized`, never as free coins).
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Mapping, Sequence

from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.domain.bitcoin import Address, Network, Txid
from kaccy_bitcoin.domain.errors import DomainError, FeeTooLow, InvalidOperator, NotFound
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.psbt import (
    PsbtMismatch,
    check_psbt_pays,
    finalize_psbt,
    psbt_status,
    psbt_txid,
    same_unsigned_tx,
)
from kaccy_bitcoin.domain.psbt_signatures import combine_psbts, verify_signatures
from kaccy_bitcoin.domain.psbt_state import UNSIGNED, PsbtState
from kaccy_bitcoin.domain.wallets import DEFAULT
from kaccy_bitcoin.domain.withdrawals import VOID, Withdrawal, built_on
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory

OPERATOR = "operator"   # the actor of an operator action when the command names nobody (--by)
_ON_CHAIN = (PsbtState.BROADCAST, PsbtState.CONFIRMED, PsbtState.COMPLETED)


class RejectedByNode(DomainError):
    """The node refused our transaction: an outside failure (exit status 1)."""

    code = "rejected_by_node"
    exit_status = 1


def view(w: Withdrawal, confirmations: int | None = None, *, signing_material: bool = True) -> dict[str, Any]:
    """`signing_material`: with the PSBT (and so its signatures); False for a reader that may
    not act on withdrawals."""
    out: dict[str, Any] = {
        "withdrawal_id": w.withdrawal_id, "psbt": w.psbt, "fee_sat": w.fee.value,
        "inputs": [{"txid": i.outpoint.txid.value, "vout": i.outpoint.vout, "amount_sat": i.amount.value}
                   for i in w.inputs],
        "outputs": [{"address": o.address, "amount_sat": o.amount.value, "change": o.change} for o in w.outputs],
        "state": w.name,
    }
    for key in ("replaces", "replaced_by", "reject_reason", "child_of"):
        if getattr(w, key):
            out[key] = getattr(w, key)
    if w.kind != "payout":
        out["kind"] = w.kind
    if w.wallet != DEFAULT:
        out["wallet"] = w.wallet
    if w.conflicted_by is not None:
        out["conflicted_by"] = w.conflicted_by.value
    if w.txid is not None and (w.state in _ON_CHAIN or w.ever_signed):
        out["txid"] = w.txid.value
        out["confirmations"] = w.confirmations if confirmations is None else confirmations
    out["risk"] = w.risk.to_dict()
    if w.user is not None:
        out["user"] = w.user
    if w.approved_by is not None:
        out["approved_by"] = w.approved_by
    if w.payjoin is not None:
        out["payjoin"] = w.payjoin.used
        out["fallback_reason"] = w.payjoin.fallback_reason
        out["original_txid"] = w.payjoin.original_txid.value
        if w.payjoin.used:
            out["payjoin_contribution_sat"] = w.payjoin.contribution.value
    if not signing_material:
        del out["psbt"]
    return out


def load_withdrawal(uow: UnitOfWork, withdrawal_id: str) -> Withdrawal:
    w = uow.withdrawals.get(withdrawal_id)
    if w is None:
        raise NotFound(f"no withdrawal with id {withdrawal_id!r}")
    return w


async def read_withdrawal(uow: UnitOfWorkFactory, withdrawal_id: str) -> Withdrawal:
    with uow.read() as u:
        return load_withdrawal(u, withdrawal_id)


def lineage(uow: UnitOfWork, w: Withdrawal) -> list[str]:
    """`w` and every withdrawal it replaces, back to the original: the holders of the coins a
    replacement of `w` shares with them."""
    ids, current = [w.withdrawal_id], w
    while current.replaces and current.replaces not in ids:
        ids.append(current.replaces)
        parent = uow.withdrawals.get(current.replaces)
        if parent is None:
            break
        current = parent
    return ids


def check_unchanged(network: Network, w: Withdrawal, psbt: str | None = None) -> None:
    """No blind signing or sending: the PSBT must spend exactly the recorded inputs and pay
    exactly the recorded outputs and fee."""
    check_psbt_pays(network, psbt or w.psbt, w.spent(), [(script_of(o.address, network), o.amount) for o in w.outputs],
                    w.fee)


def script_of(address: str, network: Network) -> bytes:
    """An output's script: its address's, or the script a payjoin receiver's output names
    (`script:<hex>`, for a script no address stands for)."""
    if address.startswith("script:"):
        return bytes.fromhex(address[len("script:"):])
    return Address(address, network).script_pubkey()


async def save_new(uow: UnitOfWorkFactory, w: Withdrawal, shared_with: Sequence[str], at) -> None:  # noqa: ANN001
    """Record a withdrawal the builder proposed, holding its coins (CoinsReserved if one was taken)."""
    async with uow() as u:
        record_new(u, w, shared_with, at)
        u.commit()


def record_new(u: UnitOfWork, w: Withdrawal, shared_with: Sequence[str], at) -> None:  # noqa: ANN001
    """In an open unit of work: hold `w`'s coins (CoinsReserved if one was taken), save it and
    record its creation for the audit trail."""
    u.reservations.reserve(w.outpoints(), w.withdrawal_id, at, shared_with=shared_with)
    u.withdrawals.save(w)
    u.record([w.event("withdrawal_created", at, withdrawal_kind=w.kind, user=w.user, replaces=w.replaces,
                      outputs=[{"address": o.address, "amount_sat": o.amount.value, "change": o.change}
                               for o in w.outputs])])



async def sign_with(signer: PsbtSigner, network: Network, w: Withdrawal, at) -> None:  # noqa: ANN001
    """Have `signer` sign `w` (nothing open meanwhile); refuse anything but the same transaction back."""
    check_unchanged(network, w)
    result = await signer.sign(w.psbt)
    if not same_unsigned_tx(network, w.psbt, result.psbt):
        raise PsbtMismatch(f"signer {signer.name} returned a PSBT for another transaction; nothing was stored")
    check_unchanged(network, w, result.psbt)
    verify_signatures(network, result.psbt)
    txid = psbt_txid(network, result.psbt)
    if txid is None and result.complete:
        txid = finalize_psbt(network, result.psbt)[2]
    w.record_signatures(result.psbt, result.complete, at, signer.name, txid)


class SignWithdrawal:
    def __init__(self, uow: UnitOfWorkFactory, signers: Mapping[str, Callable[[], Any]], clock: Clock,
                 network: Network) -> None:
        self._uow, self._signers, self._clock, self._network = uow, signers, clock, network

    async def signer(self, name: str) -> PsbtSigner:
        if name not in self._signers:
            raise SignerError(f"unknown signer {name!r}; expected one of {', '.join(self._signers)}")
        return await resolved(self._signers[name]())

    async def __call__(self, withdrawal_id: str, signer_name: str) -> dict[str, Any]:
        w = await read_withdrawal(self._uow, withdrawal_id)
        w.require_signable()
        signer = await self.signer(signer_name)
        await sign_with(signer, self._network, w, self._clock.now())   # a device may wait for a person
        async with self._uow() as uow:
            uow.withdrawals.save(w)     # refused if it was cancelled or signed elsewhere meanwhile
            uow.record([w.event("withdrawal_signed", self._clock.now(), actor=f"signer:{signer.name}")])
            uow.commit()
        return {"withdrawal_id": w.withdrawal_id, "psbt": w.psbt, "state": w.name}


class CombineWithdrawal:
    """Merge signatures made elsewhere (another cosigner's device, Sparrow, a node's
    `walletprocesspsbt`) into a withdrawal's PSBT. Refused: a PSBT for another transaction
    (psbt_mismatch), a signature from a key outside the input's script or one that does not
    verify (bad_signature). The withdrawal is `signed` once every input has what it needs
    (M valid signatures of a multisig input); a signature more on a signed one changes nothing."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, network: Network) -> None:
        self._uow, self._clock, self._network = uow, clock, network

    async def __call__(self, withdrawal_id: str, psbt: str) -> dict[str, Any]:
        w = await read_withdrawal(self._uow, withdrawal_id)
        check_unchanged(self._network, w)
        merged = combine_psbts(self._network, w.psbt, psbt)
        check_unchanged(self._network, w, merged)
        verify_signatures(self._network, merged)
        if w.state.value not in UNSIGNED and w.ever_signed:
            return {"withdrawal_id": w.withdrawal_id, "psbt": w.psbt, "state": w.name}
        w.require_signable()
        status = psbt_status(self._network, merged)
        txid = psbt_txid(self._network, merged)
        if txid is None and status.complete:
            txid = finalize_psbt(self._network, merged)[2]
        if status.signatures or status.complete:
            w.record_signatures(merged, status.complete, self._clock.now(), "combine", txid)
            async with self._uow() as uow:
                uow.withdrawals.save(w)     # refused if it was cancelled or signed elsewhere meanwhile
                uow.commit()
        return {"withdrawal_id": w.withdrawal_id, "psbt": w.psbt, "state": w.name}


class Broadcaster:
    """Sends a FINALIZED withdrawal and records the node's answer."""

    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend, clock: Clock, network: Network) -> None:
        self._uow, self._chain, self._clock, self._network = uow, chain, clock, network

    def now(self):  # noqa: ANN201
        return self._clock.now()

    async def finalize(self, w: Withdrawal) -> None:
        """SIGNED -> FINALIZED, committed before anything reaches the network."""
        check_unchanged(self._network, w)
        psbt, _, txid = finalize_psbt(self._network, w.psbt)
        w.finalize(psbt, txid, self._clock.now())

    async def send(self, w: Withdrawal) -> dict[str, Any]:
        check_unchanged(self._network, w)
        _, raw, txid = finalize_psbt(self._network, w.psbt)
        accept = await self._chain.test_accept(raw)
        if not accept.allowed and not await self._already_known(txid):
            w.reject(f"rejected by the node: {accept.reject_reason}", self._clock.now())
            async with self._uow() as uow:
                uow.withdrawals.save(w)
                uow.record([w.event("withdrawal_rejected", self._clock.now(), reason=accept.reject_reason)])
                uow.commit()
            raise RejectedByNode(
                f"withdrawal {w.withdrawal_id} was rejected by the node ({accept.reject_reason}); its "
                "transaction is signed, so its coins stay held until the chain settles it "
                "(`withdraw void` spends them back to us)")
        if accept.allowed:
            await self._chain.broadcast(raw)
        w.mark_broadcast(self._clock.now())
        w.keep_signed(raw)   # what is resubmitted if the mempool loses it
        async with self._uow() as uow:
            uow.withdrawals.save(w)
            uow.record([w.event("withdrawal_sent", self._clock.now())])
            if w.replaces:   # the node accepted the replacement: it is the one to keep alive now
                old = uow.withdrawals.get(w.replaces)
                if old is not None and old.replaced_by != w.withdrawal_id:
                    old.replaced_by = w.withdrawal_id
                    uow.withdrawals.save(old)
            uow.commit()
        return {"withdrawal_id": w.withdrawal_id, "txid": txid.value, "state": w.name}

    async def _already_known(self, txid: Txid) -> bool:
        """A resumed broadcast (or another process's, a moment ago) whose transaction already
        reached the mempool or a block. The mempool is asked directly: the wallet learns of a
        transaction another process just sent a little after the mempool does."""
        if txid in await self._chain.in_mempool([txid]):
            return True
        found = (await self._chain.wallet_transactions([txid])).get(txid)
        return found is not None and (found.confirmations > 0 or found.in_mempool)


class BroadcastWithdrawal:
    def __init__(self, uow: UnitOfWorkFactory, broadcaster: Broadcaster) -> None:
        self._uow, self._broadcaster = uow, broadcaster

    async def __call__(self, withdrawal_id: str) -> dict[str, Any]:
        with self._uow.read() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            replacements = replacements_of(uow, w)
        if w.state in (PsbtState.CONFIRMED, PsbtState.COMPLETED) and w.txid is not None:   # the chain chose it
            return {"withdrawal_id": w.withdrawal_id, "txid": w.txid.value, "state": w.name}
        w.require_not_replaced(replacements)
        if w.state in _ON_CHAIN and w.txid is not None:   # sent already (perhaps by a run that crashed)
            return {"withdrawal_id": w.withdrawal_id, "txid": w.txid.value, "state": w.name}
        if w.state is PsbtState.SIGNED:
            await self._broadcaster.finalize(w)
            async with self._uow() as uow:
                uow.withdrawals.save(w)
                uow.record([w.event("withdrawal_finalized", w.machine.history[-1].at)])
                uow.commit()
        w.require_sendable(self._broadcaster.now())
        return await self._broadcaster.send(w)


def replacements_of(uow: UnitOfWork, w: Withdrawal) -> list[Withdrawal]:
    """The unsettled withdrawals built on `w`: its replacements, their replacements and voids."""
    return built_on(w, uow.withdrawals.unsettled())


class CancelWithdrawal:
    """Only an unsigned withdrawal gives its coins back; the domain refuses the rest."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, withdrawal_id: str, by: str = OPERATOR) -> dict[str, Any]:
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            w.cancel(self._clock.now())
            w.settled = True
            uow.reservations.release(withdrawal_id)
            uow.limits.give_back(withdrawal_id)
            uow.withdrawals.save(w)
            uow.record([w.event("withdrawal_cancelled", self._clock.now(), actor=by)])
            uow.commit()
        return {"withdrawal_id": withdrawal_id, "state": w.name}


class ApproveWithdrawal:
    """An operator releases a withdrawal the risk review held: back to `created`, signable."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, withdrawal_id: str, by: str) -> dict[str, Any]:
        if not by.strip():
            raise InvalidOperator("--by must name the operator who approves")
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            event = w.approve(by.strip(), self._clock.now())
            uow.withdrawals.save(w)
            uow.record([event])
            uow.commit()
        return {"withdrawal_id": withdrawal_id, "state": w.name}


async def bip125_minimum(chain: ChainBackend, replaced: Sequence[Txid], vsize: int) -> int:
    """Rules 3 and 4: at least what the replaced transactions and their descendants pay, plus
    the node's incremental relay fee for the replacement's own size."""
    paid = 0
    for txid in replaced:
        entry = await chain.mempool_entry(txid)
        if entry is not None:
            paid += entry.descendant_fees.value
    return paid + (await chain.incremental_relay_fee()).fee_for(vsize).value


async def void_minimum(chain: ChainBackend, family: Sequence[Withdrawal], vsize: int,
                       measure: Callable[[Withdrawal], int]) -> int:
    """The least fee a void of `vsize` vB must pay to replace whichever member of the family a
    mempool may hold (at most one: they spend the same coins): BIP125 rules 3 and 4 (what that
    member and its descendants pay, plus the node's incremental relay fee for the void's size)
    and 6 (a higher fee rate than the member's). A member in our mempool is measured there; a
    member signed but not in our mempool may be in someone else's (a signed PSBT can be sent by
    anyone), so it counts as if it were in ours: its fee from its PSBT, its size by `measure`."""
    incremental = (await chain.incremental_relay_fee()).fee_for(vsize).value
    minimum = incremental
    for member in family:
        if member.txid is None:
            continue
        entry = await chain.mempool_entry(member.txid)
        if entry is not None:
            paid, fee, size = entry.descendant_fees.value, entry.fee.value, entry.vsize
        elif member.ever_signed:
            paid, fee, size = member.fee.value, member.fee.value, measure(member)
        else:
            continue    # never signed: no transaction of it exists anywhere
        minimum = max(minimum, paid + incremental, fee * vsize // size + 1)
    return minimum


def fee_too_low(what: str, minimum: int, vsize: int) -> FeeTooLow:
    rate = FeeRate(-(-minimum * 1000 // vsize))
    return FeeTooLow(minimum, str(rate), f"{what} must pay at least {minimum} sat ({rate} for its {vsize} vB): "
                                         "what it replaces and their descendants pay, plus the node's incremental "
                                         "relay fee (BIP125 rules 3 and 4)")


class VoidWithdrawal:
    """"Cancel (double-spend)": spend a signed withdrawal's inputs back to our change chain at a
    higher fee, broadcast at once. The fee outbids every signed member of the family, whether our
    mempool has it or not (see `void_minimum`). It is `voided` when the void confirms; if the original wins
    the race it is confirmed as usual."""

    def __init__(self, builder: WithdrawalBuilder, uow: UnitOfWorkFactory, chain: ChainBackend, clock: Clock,
                 signing: SignWithdrawal, broadcaster: Broadcaster) -> None:
        self._builder, self._uow, self._chain, self._clock = builder, uow, chain, clock
        self._signing, self._broadcaster = signing, broadcaster

    async def __call__(self, withdrawal_id: str, fee_rate: FeeRate | None = None,
                       signer_name: str = "software", by: str = OPERATOR) -> dict[str, Any]:
        with self._uow.read() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            holders = lineage(uow, w)
            rivals = [x for x in (uow.withdrawals.get(i) for i in holders) if x is not None]
            newer = w
            while newer.replaced_by and all(r.withdrawal_id != newer.replaced_by for r in rivals):
                found = uow.withdrawals.get(newer.replaced_by)
                if found is None:
                    break
                rivals.append(found)
                newer = found
        w.require_voidable()
        signer = await self._signing.signer(signer_name)
        builder = self._builder.of(w.wallet)
        rate = fee_rate or await builder.fee_rate(None)
        void = await builder.propose_void(uuid.uuid4().hex, w, rate)
        vsize = builder.vsize(void)
        minimum = await void_minimum(self._chain, rivals, vsize, builder.vsize)   # what the void must outbid
        if void.fee.value < minimum:
            if fee_rate is not None:
                raise fee_too_low(f"the void of {withdrawal_id}", minimum, vsize)
            void = await builder.propose_void(void.withdrawal_id, w, FeeRate(-(-minimum * 1000 // vsize)))
        void.kind, void.replaces = VOID, w.withdrawal_id
        now = self._clock.now()
        await sign_with(signer, self._builder.network, void, now)
        if void.state is PsbtState.PARTIALLY_SIGNED and builder.is_multisig:
            # One cosigner's signature: the void is recorded (holding what the original holds)
            # and waits for the others (`withdraw sign`/`combine` on it, then `withdraw broadcast`).
            await save_new(self._uow, void, holders, now)
            return {"withdrawal_id": w.withdrawal_id, "state": w.name, "void": view(void)}
        if void.state is not PsbtState.SIGNED:
            raise SignerError(f"signer {signer.name} could not sign every input of the void; nothing was sent")
        await self._broadcaster.finalize(void)
        async with self._uow() as u:
            record_new(u, void, holders, now)
            u.record([w.event("withdrawal_void_requested", now, actor=by, void_id=void.withdrawal_id)])
            u.commit()
        sent = await self._broadcaster.send(void)
        return {"withdrawal_id": w.withdrawal_id, "state": w.name,
                "void": {**view(void), **sent}}


class ShowWithdrawal:
    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend) -> None:
        self._uow, self._chain = uow, chain

    async def __call__(self, withdrawal_id: str, *, signing_material: bool = True) -> dict[str, Any]:
        w = await read_withdrawal(self._uow, withdrawal_id)
        confirmations = None
        if w.txid is not None and w.state in _ON_CHAIN:
            found = (await self._chain.wallet_transactions([w.txid])).get(w.txid)
            confirmations = max(found.confirmations, 0) if found else 0
        return view(w, confirmations, signing_material=signing_material)


class ListWithdrawals:
    """The withdrawals in one state, oldest first (e.g. `held`: waiting for an operator)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, state: str, *, signing_material: bool = True) -> dict[str, Any]:
        with self._uow.read() as uow:
            found = uow.withdrawals.in_states([state])
        return {"withdrawals": [view(w, signing_material=signing_material) for w in found]}
