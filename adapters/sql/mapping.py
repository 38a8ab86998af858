"""Row <-> domain translation; the domain never sees a row, the database never sees an aggregate.

Rows are SQLAlchemy Core rows (attribute access by column name); what is written is a dict of
column values."""
from __future__ import annotations

import datetime as dt
from typing import Any

from kaccy_bitcoin.domain.audit import AuditEntry
from kaccy_bitcoin.domain.bitcoin import HARDENED, DerivationPath, OutPoint, Txid
from kaccy_bitcoin.domain.consolidation import Consolidation
from kaccy_bitcoin.domain.consolidation_state import ConsolidationMachine
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.limits import Limits, Usage
from kaccy_bitcoin.domain.invoice_state import InvoiceMachine
from kaccy_bitcoin.domain.lightning import CancelReason
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.domain.withdrawal_payjoin import PayjoinSend
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import OutputStatus, Payment, PaymentRequest, ReceivedOutput
from kaccy_bitcoin.domain.payment_state import PaymentMachine
from kaccy_bitcoin.domain.psbt_state import PsbtMachine
from kaccy_bitcoin.domain.risk import RiskAssessment
from kaccy_bitcoin.domain.statemachine import Transition
from kaccy_bitcoin.domain.wallets import DEFAULT as DEFAULT_WALLET, CosignerKey, Wallet
from kaccy_bitcoin.domain.withdrawals import Withdrawal, WithdrawalInput, WithdrawalOutput
from kaccy_bitcoin.domain.zeroconf import ZeroconfAcceptance, ZeroconfRisk


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def order_fields(r: PaymentRequest) -> dict:
    return {"order_id": r.order_id, "address": r.address, "amount_sat": r.amount.value,
            "tolerance_sat": r.tolerance.value, "created_at": r.created_at, "expires_at": r.expires_at,
            "label": r.label, "derivation_index": r.derivation_index,
            "checkout_token": r.checkout_token}


def order_from_row(row: Any) -> PaymentRequest:
    return PaymentRequest(order_id=row.order_id, address=row.address, amount=Satoshis(row.amount_sat),
                          created_at=utc(row.created_at), tolerance=Satoshis(row.tolerance_sat),
                          expires_at=utc(row.expires_at), label=row.label,
                          derivation_index=row.derivation_index, checkout_token=row.checkout_token)


def payment_fields(p: Payment) -> dict:
    return {"state": p.state.name, "history": [t.to_dict() for t in p.history], "event_seq": p.event_seq,
            "reported_match": list(p.reported_match) if p.reported_match else None,
            "finality_alerted": p.finality_alerted, "paid_reported": p.paid_reported,
            "lightning": dict(p.lightning) or None, "zeroconf": p.zeroconf.to_dict() if p.zeroconf else None}


PAYMENT_COLUMNS = ("state", "history", "event_seq", "reported_match", "finality_alerted", "paid_reported",
                   "lightning", "zeroconf")
OUTPUT_STATE_COLUMNS = ("confirmations", "block_hash", "status", "replaced_by")


def output_state(o: ReceivedOutput) -> dict:
    """The columns of an output that change after it is first recorded."""
    return {"confirmations": o.confirmations, "block_hash": o.block_hash, "status": o.status.value,
            "replaced_by": o.replaced_by.value if o.replaced_by else None}


def output_fields(order_id: str, o: ReceivedOutput) -> dict:
    return {"order_id": order_id, "amount_sat": o.amount.value, "first_seen": o.first_seen,
            "zeroconf_risk": o.zeroconf_risk.to_dict() if o.zeroconf_risk else None, **output_state(o)}


def payment_from_rows(row: Any, outputs: list[Any]) -> Payment:
    history = [Transition.from_dict(t) for t in row.history]
    machine = PaymentMachine(PaymentMachine.States[row.state], history)
    received = {}
    for o in outputs:
        op = OutPoint(Txid(o.txid), o.vout)
        received[op] = ReceivedOutput(op, Satoshis(o.amount_sat), o.confirmations, utc(o.first_seen),
                                      o.block_hash, OutputStatus(o.status),
                                      Txid(o.replaced_by) if o.replaced_by else None,
                                      ZeroconfRisk.from_dict(o.zeroconf_risk))
    match = tuple(row.reported_match) if row.reported_match else None
    return Payment(row.order_id, received, machine, row.event_seq, match, row.finality_alerted,
                   paid_reported=bool(row.paid_reported), lightning=dict(row.lightning or {}),
                   zeroconf=ZeroconfAcceptance.from_dict(row.zeroconf))


def invoice_fields(i: OrderInvoice) -> dict:
    return {"order_id": i.order_id, "payment_request": i.payment_request, "amount_msat": i.amount.value,
            "created_at": i.created_at, "expiry_seconds": i.expiry_seconds, "state": i.state.name,
            "history": [t.to_dict() for t in i.machine.history],
            "cancel_reason": i.cancel_reason.value if i.cancel_reason else None,
            "amount_paid_msat": i.amount_paid.value, "settled_at": i.settled_at,
            "add_index": i.add_index, "settle_index": i.settle_index}


def invoice_from_row(row: Any) -> OrderInvoice:
    history = [Transition.from_dict(t) for t in row.history]
    return OrderInvoice(
        order_id=row.order_id, payment_hash=row.payment_hash, payment_request=row.payment_request,
        amount=MilliSatoshis(row.amount_msat), created_at=utc(row.created_at), expiry_seconds=row.expiry_seconds,
        machine=InvoiceMachine(InvoiceMachine.States[row.state], history),
        cancel_reason=CancelReason(row.cancel_reason) if row.cancel_reason else None,
        amount_paid=MilliSatoshis(row.amount_paid_msat), settled_at=utc(row.settled_at),
        add_index=row.add_index, settle_index=row.settle_index, version=row.version)


def withdrawal_fields(w: Withdrawal) -> dict:
    return {
        "state": w.state.name, "created_at": w.created_at, "psbt": w.psbt,
        "txid": w.txid.value if w.txid else None, "settled": w.settled,
        "data": {
            "inputs": [{"txid": i.outpoint.txid.value, "vout": i.outpoint.vout, "amount_sat": i.amount.value,
                        "chain": i.chain, "index": i.index} for i in w.inputs],
            "outputs": [{"address": o.address, "amount_sat": o.amount.value, "change": o.change}
                        for o in w.outputs],
            "fee_sat": w.fee.value, "history": [t.to_dict() for t in w.machine.history],
            "replaces": w.replaces, "replaced_by": w.replaced_by, "reject_reason": w.reject_reason,
            "child_of": w.child_of, "kind": w.kind, "rebroadcasts": w.rebroadcasts,
            "stuck_alerted": w.stuck_alerted, "confirmations": w.confirmations,
            "conflicted_by": w.conflicted_by.value if w.conflicted_by else None,
            "last_rebroadcast_at": w.last_rebroadcast_at.isoformat() if w.last_rebroadcast_at else None,
            "user": w.user, "risk": w.risk.to_dict(), "approved_by": w.approved_by,
            "wallet": w.wallet, "signed_tx": w.signed_tx,
            **({"payjoin": w.payjoin.to_dict()} if w.payjoin is not None else {}),
        },
    }


def withdrawal_from_row(row: Any) -> Withdrawal:
    """Rows written before a field existed get its default
    (`txid` lived in `data` before it had a column)."""
    d = row.data
    machine = PsbtMachine(PsbtMachine.States[row.state], [Transition.from_dict(t) for t in d["history"]])
    txid = row.txid or d.get("txid")
    return Withdrawal(
        withdrawal_id=row.withdrawal_id, created_at=utc(row.created_at),
        inputs=[WithdrawalInput(OutPoint(Txid(i["txid"]), i["vout"]), Satoshis(i["amount_sat"]),
                                i.get("chain"), i.get("index")) for i in d["inputs"]],
        outputs=[WithdrawalOutput(o["address"], Satoshis(o["amount_sat"]), o["change"]) for o in d["outputs"]],
        fee=Satoshis(d["fee_sat"]), psbt=row.psbt, machine=machine,
        txid=Txid(txid) if txid else None, replaces=d.get("replaces"),
        replaced_by=d.get("replaced_by"), reject_reason=d.get("reject_reason", ""), child_of=d.get("child_of"),
        kind=d.get("kind", "payout"), rebroadcasts=d.get("rebroadcasts", 0),
        stuck_alerted=d.get("stuck_alerted", False), confirmations=d.get("confirmations", 0),
        conflicted_by=Txid(d["conflicted_by"]) if d.get("conflicted_by") else None,
        settled=bool(row.settled), version=row.version, user=d.get("user"),
        risk=RiskAssessment.from_dict(d.get("risk")), approved_by=d.get("approved_by"),
        wallet=d.get("wallet", DEFAULT_WALLET), signed_tx=d.get("signed_tx"),
        payjoin=PayjoinSend.from_dict(d.get("payjoin")),
        last_rebroadcast_at=dt.datetime.fromisoformat(d["last_rebroadcast_at"]) if d.get("last_rebroadcast_at")
        else None)


def event_from_row(row: Any) -> DomainEvent:
    return DomainEvent(row.event_id, row.kind, row.subject, utc(row.at), dict(row.data), row.actor)


def audit_entry_from_row(row: Any) -> AuditEntry:
    return AuditEntry(row.seq, row.event_id, row.kind, row.subject, row.actor, utc(row.at), row.data,
                      row.prev_hash, row.hash)


def limits_from_row(row: Any) -> Limits:
    return Limits(row.scope, row.daily_sat, row.monthly_sat, row.single_max_sat, row.hourly_sat)


def usage_from_row(row: Any) -> Usage:
    return Usage(row.withdrawal_id, row.user_id, row.amount_sat, utc(row.at), bool(row.returned),
                 tuple(row.destinations or ()))


def wallet_fields(w: Wallet) -> dict:
    return {"name": w.name, "number": w.number, "threshold": w.threshold,
            "keys": [k.expression() for k in w.keys], "definition": w.definition(), "created_at": w.created_at}


def wallet_from_row(row: Any) -> Wallet:
    """Stored keys were checked when the wallet was added; they are read back without the
    network check (the network cannot change under a database)."""
    keys = tuple(_stored_key(k) for k in row._mapping["keys"])   # `keys`, not Row.keys
    return Wallet(row.name, row.number, row.threshold, keys, utc(row.created_at))


def _stored_key(text: str) -> CosignerKey:
    origin, _, xpub = text[1:].partition("]")
    fingerprint, _, path = origin.partition("/")
    steps = [int(p.rstrip("h'")) | (HARDENED if p[-1] in "h'" else 0) for p in path.split("/")]
    return CosignerKey(fingerprint, DerivationPath(tuple(steps)), xpub)


def consolidation_fields(c: Consolidation, at: dt.datetime) -> dict:
    return {"state": c.state.name, "history": [t.to_dict() for t in c.machine.history],
            "inputs": [{"txid": o.txid.value, "vout": o.vout} for o in c.inputs],
            "withdrawal_id": c.withdrawal_id, "updated_at": at}


def consolidation_from_row(row: Any) -> Consolidation:
    machine = ConsolidationMachine(ConsolidationMachine.States[row.state],
                                   [Transition.from_dict(t) for t in row.history])
    return Consolidation(row.wallet, machine, [OutPoint(Txid(i["txid"]), i["vout"]) for i in row.inputs],
                         row.withdrawal_id, version=row.version)


def swap_fields(s: Any) -> dict:
    """A swap's row (domain/swaps.py is imported by the caller: it loads python-bitcointx)."""
    data = {
        "key_index": s.key_index, "our_pubkey": s.our_pubkey.hex(), "counterparty_pubkey": s.counterparty_pubkey.hex(),
        "amount_sat": s.amount.value, "receive_sat": s.receive.value, "wallet": s.wallet,
        "payment_hash": _hex(s.payment_hash), "secret": _hex(s.secret), "preimage_txid": s.preimage_txid,
        "locktime": s.locktime, "funding_withdrawal_id": s.funding_withdrawal_id,
        "funding": str(s.funding) if s.funding else None, "lock_height": s.lock_height,
        "lock_spent_by": s.lock_spent_by,
        "counter": {"outpoint": str(s.counter.outpoint), "amount_sat": s.counter.amount.value,
                    "script": s.counter.script.hex()} if s.counter else None,
        "redeem_tx": _hex(s.redeem_tx), "redeem_txid": s.redeem_txid, "redeem_confirmed": s.redeem_confirmed,
        "refund_tx": _hex(s.refund_tx), "refund_txid": s.refund_txid, "refund_confirmed": s.refund_confirmed,
    }
    last = s.machine.history[-1].at if s.machine.history else s.created_at
    return {"role": s.role, "state": s.state.name, "key_index": s.key_index, "watching": s.watching,
            "history": [t.to_dict() for t in s.machine.history], "data": data, "created_at": s.created_at,
            "updated_at": last}


def swap_from_row(row: Any) -> Any:
    from kaccy_bitcoin.domain.swap_state import SwapMachine
    from kaccy_bitcoin.domain.swaps import CounterLock, Swap

    d = row.data
    counter = d.get("counter")
    machine = SwapMachine(SwapMachine.States[row.state], [Transition.from_dict(t) for t in row.history])
    return Swap(
        row.swap_id, row.role, d["key_index"], bytes.fromhex(d["our_pubkey"]), bytes.fromhex(d["counterparty_pubkey"]),
        Satoshis(d["amount_sat"]), Satoshis(d["receive_sat"]), d["wallet"], utc(row.created_at), machine,
        payment_hash=_bytes(d["payment_hash"]), secret=_bytes(d["secret"]), preimage_txid=d["preimage_txid"],
        locktime=d["locktime"], funding_withdrawal_id=d["funding_withdrawal_id"],
        funding=OutPoint.parse(d["funding"]) if d["funding"] else None, lock_height=d["lock_height"],
        lock_spent_by=d["lock_spent_by"],
        counter=CounterLock(OutPoint.parse(counter["outpoint"]), Satoshis(counter["amount_sat"]),
                            bytes.fromhex(counter["script"])) if counter else None,
        redeem_tx=_bytes(d["redeem_tx"]), redeem_txid=d["redeem_txid"], redeem_confirmed=d["redeem_confirmed"],
        refund_tx=_bytes(d["refund_tx"]), refund_txid=d["refund_txid"], refund_confirmed=d["refund_confirmed"],
        version=row.version)


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def _bytes(value: str | None) -> bytes | None:
    return bytes.fromhex(value) if value is not None else None
