"""`withdraw payjoin`: pay a BIP21 URI, as a BIP78 payjoin when its receiver offers one.

The withdrawal takes the transaction manager's way (limits, risk, wallet/tier, coins, PSBT,
audit), is signed and finalized (committed before anything leaves), then offered to the `pj=`
endpoint. The proposal that comes back is checked (domain/payjoin_sender.py), our inputs are
restored and signed by the chosen signer, its fee rate and the node's `testmempoolaccept` are
checked, and the withdrawal follows it (`Withdrawal.follow_proposal`) before it is sent. Any
failure on the way sends the original instead, and says why (`fallback_reason`). A crash at
any point leaves a finalized withdrawal whose `withdraw broadcast` sends what it follows; the
coins stay held until the chain settles whichever transaction it took.
"""
from __future__ import annotations

import logging
from typing import Any

from kaccy_bitcoin.application.transaction_manager import TransactionManager
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.application.withdrawals import Broadcaster, SignWithdrawal, read_withdrawal, script_of
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.coin_selection import INPUT_WEIGHT, vsize
from kaccy_bitcoin.domain.errors import ConcurrentUpdate, DomainError, InvalidAmount
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.payjoin_sender import (
    ProposalRefused, SenderContext, check_fee_rate, check_proposal, fill_our_inputs, original_for_receiver,
    original_size, proposal_outputs, proposal_spends)
from kaccy_bitcoin.domain.payjoin_uri import PaymentUri, RequestParams, endpoint_refusal, parse_payment_uri
from kaccy_bitcoin.domain.psbt import InvalidPsbt, PsbtMismatch, finalize_psbt, same_unsigned_tx
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawals import Withdrawal, WithdrawalOutput
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.payjoin_endpoint import PayjoinEndpoint, PayjoinRequestFailed
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

log = logging.getLogger(__name__)


class _Fallback(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PayjoinWithdrawal:
    def __init__(self, manager: TransactionManager, signing: SignWithdrawal, broadcaster: Broadcaster,
                 uow: UnitOfWorkFactory, chain: ChainBackend, endpoint: PayjoinEndpoint, builder: WithdrawalBuilder,
                 network: Network, timeout_seconds: float = 30.0) -> None:
        self._manager, self._signing, self._broadcaster = manager, signing, broadcaster
        self._uow, self._chain, self._endpoint, self._builder = uow, chain, endpoint, builder
        self._network, self._timeout = network, timeout_seconds

    async def __call__(self, uri: str, fee_rate: FeeRate | None = None, signer_name: str = "software",
                       max_additional_fee_sat: int | None = None, wallet: str | None = None,
                       user: str | None = None) -> dict[str, Any]:
        pay = parse_payment_uri(uri, self._network)
        if max_additional_fee_sat is not None and (isinstance(max_additional_fee_sat, bool)
                                                   or not isinstance(max_additional_fee_sat, int)
                                                   or max_additional_fee_sat < 0):
            raise InvalidAmount(f"--max-additional-fee-sat must be a non-negative number of sat, "
                                f"got {max_additional_fee_sat!r}")
        signer = await self._signing.signer(signer_name)       # an unknown signer fails before anything is held
        created = await self._manager([(pay.address.value, pay.amount.value)], fee_rate, user, wallet)
        wid = created["withdrawal_id"]
        if created["state"] != PsbtState.CREATED.name.lower():   # held by the risk review: nothing signed
            return {"withdrawal_id": wid, "state": created["state"], "payjoin": False, "fallback_reason": None,
                    "risk": created["risk"]}
        template = created["psbt"]          # our inputs' UTXOs, scripts and key paths, to restore
        signed = await self._signing(wid, signer_name)
        if signed["state"] != PsbtState.SIGNED.name.lower():
            return {"withdrawal_id": wid, "state": signed["state"], "payjoin": False,
                    "fallback_reason": "not_fully_signed"}
        w = await read_withdrawal(self._uow, wid)
        await self._broadcaster.finalize(w)
        w.start_payjoin()
        await self._save(w, "withdrawal_finalized")
        try:
            try:
                await self._negotiate(pay, w, template, signer, max_additional_fee_sat)
            except _Fallback as fallback:
                w.payjoin_fell_back(fallback.reason)
                await self._save(w, "withdrawal_payjoin_fallback", reason=fallback.reason)
            sent = await self._broadcaster.send(w)
        except ConcurrentUpdate:
            # The monitor moved it meanwhile: it saw in the mempool what we just sent, or the
            # original, which the receiver holds and may send itself. Either is on its way.
            seen = await read_withdrawal(self._uow, wid)
            if seen.txid is None or seen.state not in (PsbtState.BROADCAST, PsbtState.CONFIRMED):
                raise
            if seen.payjoin is not None and not seen.payjoin.used and seen.payjoin.fallback_reason is None:
                seen.payjoin_fell_back("original_sent_by_receiver")
                await self._save(seen, "withdrawal_payjoin_fallback", reason="original_sent_by_receiver")
            w, sent = seen, {"withdrawal_id": wid, "txid": seen.txid.value, "state": seen.name}
        assert w.payjoin is not None
        return {**sent, "payjoin": w.payjoin.used, "fallback_reason": w.payjoin.fallback_reason}

    async def _save(self, w: Withdrawal, event: str, **data: Any) -> None:
        async with self._uow() as u:
            u.withdrawals.save(w)
            u.record([w.event(event, self._broadcaster.now(), **data)])
            u.commit()

    async def _negotiate(self, pay: PaymentUri, w: Withdrawal, template: str, signer: PsbtSigner,
                         max_fee: int | None) -> None:
        """Offer the original, check and sign the proposal, and make `w` follow it; _Fallback
        with the reason when the original must be sent instead."""
        net = self._network
        if pay.endpoint is None:
            raise _Fallback("no_endpoint")
        refusal = endpoint_refusal(pay.endpoint, net)
        if refusal is not None:
            raise _Fallback(refusal)
        original = original_for_receiver(net, w.psbt)
        fee, size = original_size(net, w.psbt)
        input_vsize = vsize(INPUT_WEIGHT[self._builder.of(w.wallet).address_type])
        change = [n for n, o in enumerate(w.outputs) if o.change]
        params = RequestParams(change[0] if change else None,
                               Satoshis(-(-fee.value * input_vsize // size) if max_fee is None else max_fee),
                               FeeRate(fee.value * 1000 // size), pay.output_substitution)
        try:
            proposal = await self._endpoint.request(params.url(pay.endpoint), original, self._timeout)
            checked = check_proposal(net, original, proposal, SenderContext(pay.address.script_pubkey(), params,
                                                                            input_vsize))
            filled = fill_our_inputs(net, proposal, template, checked.our_inputs)
            result = await signer.sign(filled)
            if not same_unsigned_tx(net, filled, result.psbt):
                raise _Fallback("signer_changed_transaction")
            final, raw, txid = finalize_psbt(net, result.psbt)
            check_fee_rate(net, raw, checked.fee, params.min_fee_rate)
        except PayjoinRequestFailed as failed:
            raise _Fallback(failed.reason) from None
        except ProposalRefused as refused:
            raise _Fallback(refused.reason) from None
        except (InvalidPsbt, PsbtMismatch, SignerError):
            raise _Fallback("proposal_not_signable") from None
        except _Fallback:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, DomainError) as exc:
            # a stranger's proposal python-bitcointx chokes on while we fill, sign or finalize it:
            # whatever it is, the original goes out
            log.warning("payjoin proposal for withdrawal %s not signable: %r", w.withdrawal_id, exc)
            raise _Fallback("proposal_not_signable") from None
        accept = await self._chain.test_accept(raw)
        if not accept.allowed:
            raise _Fallback("proposal_rejected_by_node")
        w.keep_signed(finalize_psbt(net, w.psbt)[1])    # the original, to follow again if it is the one mined
        ours = [script_of(o.address, net) for o in w.outputs if o.change]
        outputs = [WithdrawalOutput(a, Satoshis(v), c) for a, v, c in proposal_outputs(net, final, ours)]
        w.follow_proposal(final, txid, raw, proposal_spends(net, final), outputs, checked.fee, checked.contribution)
        await self._save(w, "withdrawal_payjoin_proposal", original_txid=w.payjoin.original_txid.value,
                         contribution_sat=checked.contribution.value)
