"""`kaccy-bitcoin swap`: atomic swaps with BIP199 HTLCs (docs/swaps.md)."""
from __future__ import annotations

import argparse
from typing import Any

from kaccy_bitcoin.bootstrap.cli.common import actions, fee_rate, int_in_range, service

NAME = "swap"

STATES = ("INITIATED", "LOCKED", "COMPLETED", "REFUNDED", "CANCELLED")


def register(subparsers: Any) -> None:
    sats = 21_000_000 * 100_000_000
    vout = int_in_range("--counter-vout", 0, 100_000)
    swap = actions(subparsers.add_parser(NAME, help="atomic swaps: hash-time-locked contracts on chain"))

    def terms(p: argparse.ArgumentParser, initiator: bool) -> None:
        p.add_argument("--counterparty-pubkey", required=True, help="the counterparty's compressed key (hex)")
        p.add_argument("--amount-sat", type=int_in_range("--amount-sat", 1, sats), required=True,
                       help="what we lock")
        p.add_argument("--receive-sat", type=int_in_range("--receive-sat", 1, sats), required=True,
                       help="what we expect in the other lock")
        if initiator:
            p.add_argument("--timeout-blocks", type=int_in_range("--timeout-blocks", 1, 52_560), default=144)
            p.add_argument("--fee-rate", type=fee_rate, default=None, help="sat/vB (default: the node's estimate)")
        p.add_argument("--wallet", default=None, help="the wallet that locks and receives (default: default)")

    def counter(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--counter-txid", required=required)
        p.add_argument("--counter-vout", type=vout, required=required)
        p.add_argument("--counter-script", required=required, help="the counterparty's HTLC script (hex)")

    terms(swap.add_parser("initiate", help="make the secret and lock coins in HTLC1"), True)
    terms(swap.add_parser("accept", help="record the terms and a fresh key of ours; moves no coins"), False)
    p = swap.add_parser("participate", help="check the initiator's lock, then lock coins in HTLC2")
    p.add_argument("swap_id")
    p.add_argument("--payment-hash", required=True)
    counter(p, True)
    p.add_argument("--timeout-blocks", type=int_in_range("--timeout-blocks", 1, 52_560), default=72)
    p.add_argument("--fee-rate", type=fee_rate, default=None)
    p = swap.add_parser("redeem", help="claim the counterparty's lock with the secret")
    p.add_argument("swap_id")
    counter(p, False)
    p.add_argument("--fee-rate", type=fee_rate, default=None)
    p = swap.add_parser("refund", help="take our lock back once the chain reaches its locktime")
    p.add_argument("swap_id")
    p.add_argument("--fee-rate", type=fee_rate, default=None)
    swap.add_parser("cancel", help="cancel a swap whose lock was never funded").add_argument("swap_id")
    swap.add_parser("show", help="one swap").add_argument("swap_id")
    swap.add_parser("list", help="every swap").add_argument("--state", choices=STATES, default=None)


async def run(args: argparse.Namespace, container: Any) -> dict[str, Any]:
    """Runs one `swap` command: the container's use case its action names."""
    a = args.action
    use = await service(container, "list_swaps" if a == "list" else f"{a}_swap")
    if a == "initiate":
        return await use(args.counterparty_pubkey, args.amount_sat, args.receive_sat, args.timeout_blocks,
                         args.fee_rate, args.wallet)
    if a == "accept":
        return await use(args.counterparty_pubkey, args.amount_sat, args.receive_sat, args.wallet)
    if a == "participate":
        return await use(args.swap_id, args.payment_hash, args.counter_txid, args.counter_vout, args.counter_script,
                         args.timeout_blocks, args.fee_rate)
    if a == "redeem":
        return await use(args.swap_id, args.counter_txid, args.counter_vout, args.counter_script, args.fee_rate)
    if a == "refund":
        return await use(args.swap_id, args.fee_rate)
    if a in ("cancel", "show"):
        return await use(args.swap_id)
    return await use(args.state)
