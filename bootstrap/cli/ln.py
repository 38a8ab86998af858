"""`kaccy-bitcoin ln`: Lightning (LND): invoices for orders, pay out, channels."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, int_in_range, positive_int, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "ln"


def register(sub: Any) -> None:
    ln = actions(sub.add_parser(NAME, help="Lightning (LND): invoices for orders, pay out, channels"))
    invoice = actions(ln.add_parser("invoice", help="Lightning invoices for orders"), dest="invoice_action")
    ic = invoice.add_parser("create", help="a BOLT11 invoice the customer can pay the order with")
    ic.add_argument("order_id")
    ic.add_argument("--amount-msat", required=True, type=int_in_range("--amount-msat", 1, 2_100_000_000_000_000_000))
    ic.add_argument("--expiry", type=int_in_range("--expiry", 1, 365 * 24 * 3600), default=None,
                    help="seconds the invoice can be paid for (default 3600)")
    invoice.add_parser("show", help="the order's Lightning invoice and its state").add_argument("order_id")
    pay = ln.add_parser("pay", help="pay a BOLT11 payment request and wait for the result")
    pay.add_argument("payment_request")
    pay.add_argument("--max-fee-sat", type=positive_int("--max-fee-sat"), default=None,
                     help="the most the routing may cost (default and most: KACCY_LN_MAX_FEE_PPM of the amount)")
    pay.add_argument("--user", default=None, help="whose payout: checked against their limits, reviewed "
                                                  "against their history")
    ln.add_parser("send", help="pay a Lightning payment an operator approved (or ask LND again about one "
                               "in flight)").add_argument("payment_id")
    ln.add_parser("show", help="a Lightning payment and its state").add_argument("payment_id")
    ln.add_parser("channels", help="the node's channels and their balances (opening and closing ones too)")
    channel = actions(ln.add_parser("channel", help="open and close channels (audited operator actions)"),
                      dest="channel_action")
    co = channel.add_parser("open", help="open a channel to a peer, funded from the node's wallet")
    co.add_argument("--node", required=True, help="the peer as PUBKEY@HOST:PORT")
    co.add_argument("--local-sat", required=True, type=int_in_range("--local-sat", 1, 2_100_000_000_000_000),
                    help="the channel's size, from the node's wallet")
    co.add_argument("--push-sat", type=int_in_range("--push-sat", 0, 2_100_000_000_000_000), default=0,
                    help="given to the peer at opening")
    co.add_argument("--fee-rate", default=None, help="the funding transaction's fee rate in whole sat/vB "
                                                     "(default: LND's estimate)")
    co.add_argument("--by", default="operator", help="the operator opening it (for the audit trail)")
    cc = channel.add_parser("close", help="close a channel cooperatively, or by force with --force")
    cc.add_argument("channel_point", help="FUNDING_TXID:OUTPUT_INDEX (see `ln channels`)")
    cc.add_argument("--force", action="store_true", help="close unilaterally (our funds wait for the CSV delay)")
    cc.add_argument("--by", default="operator", help="the operator closing it (for the audit trail)")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "invoice":
        if args.invoice_action == "create":
            create = await service(c, "create_order_invoice")
            return await create(args.order_id, args.amount_msat, args.expiry)
        show = await service(c, "show_order_invoice")
        return await show(args.order_id)
    if args.action == "pay":
        pay = await service(c, "pay_invoice")
        return await pay(args.payment_request, args.max_fee_sat, args.user)
    if args.action in ("send", "show"):
        use_case = await service(c, f"{args.action}_ln_payment")
        return await use_case(args.payment_id)
    if args.action == "channel":
        if args.channel_action == "open":
            open_channel = await service(c, "open_channel")
            return await open_channel(args.node, args.local_sat, args.push_sat, args.fee_rate, args.by)
        close = await service(c, "close_channel")
        return await close(args.channel_point, args.force, args.by)
    channels = await service(c, "list_channels")
    return await channels()
