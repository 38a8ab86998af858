"""`kaccy-bitcoin withdraw`: money going out (PSBT withdrawals)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import UsageError, actions, fee_rate, service, signed_int

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "withdraw"
SIGNERS = ["software", "hwi", "core"]


def register(sub: Any) -> None:
    withdraw = actions(sub.add_parser(NAME, help="money going out (PSBT withdrawals)"))
    wc = withdraw.add_parser("create", help="select coins and build an unsigned PSBT")
    wc.add_argument("--amount-sat", action="append", required=True, dest="amounts", type=signed_int("--amount-sat"))
    wc.add_argument("--to", action="append", default=[], dest="to")
    wc.add_argument("--to-wallet", action="append", default=[], dest="to_wallets",
                    help="pay a fresh receive address of this wallet of ours (a sweep or refill)")
    wc.add_argument("--fee-rate", type=fee_rate, default=None, help="sat/vB (default: the node's estimate)")
    wc.add_argument("--user", default=None, help="whose withdrawal: checked against their limits, reviewed "
                                                 "against their history")
    wc.add_argument("--wallet", default=None,
                    help="the wallet to pay from (default: the custody tier of the amount, else default)")
    ws = withdraw.add_parser("sign", help="add signatures")
    ws.add_argument("withdrawal_id")
    ws.add_argument("--signer", required=True, choices=SIGNERS)
    wm = withdraw.add_parser("combine", help="merge signatures made elsewhere (another cosigner, Sparrow, "
                                             "a node's walletprocesspsbt)")
    wm.add_argument("withdrawal_id")
    wm.add_argument("--psbt", required=True, help="the base64 PSBT holding the other signatures")
    for name, text in (("broadcast", "finalize, check with the mempool, and send"),
                       ("show", "show a withdrawal")):
        withdraw.add_parser(name, help=text).add_argument("withdrawal_id")
    wx = withdraw.add_parser("cancel", help="withdraw an unsigned (or held) withdrawal and release its coins "
                                            "(or refuse a held Lightning payment)")
    wx.add_argument("withdrawal_id")
    wx.add_argument("--by", default="operator", help="the operator cancelling (for the audit trail)")
    wa = withdraw.add_parser("approve", help="release a withdrawal (or Lightning payment) the risk review held")
    wa.add_argument("withdrawal_id")
    wa.add_argument("--by", required=True, help="the operator approving (for the audit trail)")
    wb = withdraw.add_parser("bump", help="replace a broadcast withdrawal with a higher fee (RBF)")
    wb.add_argument("withdrawal_id")
    wb.add_argument("--fee-rate", type=fee_rate, required=True)
    wb.add_argument("--to", action="append", default=[], dest="to", help="batch RBF: another payout to add")
    wb.add_argument("--amount-sat", action="append", default=[], dest="amounts", type=signed_int("--amount-sat"))
    wv = withdraw.add_parser("void", help="spend a signed withdrawal's inputs back to our change chain at a "
                                          "higher fee (cancel by double-spend), broadcast at once")
    wv.add_argument("withdrawal_id")
    wv.add_argument("--fee-rate", type=fee_rate, default=None,
                    help="sat/vB (default: the node's estimate, raised to what BIP125 requires)")
    wv.add_argument("--signer", choices=SIGNERS, default="software")
    wv.add_argument("--by", default="operator", help="the operator voiding (for the audit trail)")
    wj = withdraw.add_parser("payjoin", help="pay a BIP21 URI's amount to its address, as a BIP78 payjoin when it "
                                             "has pj= (else, or on any failure, the ordinary transaction)")
    wj.add_argument("uri", metavar="BIP21_URI")
    wj.add_argument("--fee-rate", type=fee_rate, default=None, help="sat/vB (default: the node's estimate)")
    wj.add_argument("--signer", choices=["software", "core"], default="software")
    wj.add_argument("--max-additional-fee-sat", type=signed_int("--max-additional-fee-sat"), default=None,
                    help="the most our change may give towards the receiver's input's fee (default: the fee "
                         "of one input of our type at the original's rate)")
    wj.add_argument("--wallet", default=None,
                    help="the wallet to pay from (default: the custody tier of the amount, else default)")
    wj.add_argument("--user", default=None, help="whose withdrawal (limits and risk history)")
    wp = withdraw.add_parser("cpfp", help="lift a stuck broadcast withdrawal with a child spending its change")
    wp.add_argument("withdrawal_id")
    wp.add_argument("--fee-rate", type=fee_rate, required=True, help="target rate for parent and child together")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        if not args.to and not args.to_wallets:
            raise UsageError("give at least one --to ADDRESS (or --to-wallet NAME) with its --amount-sat")
        if len(args.to) + len(args.to_wallets) != len(args.amounts):
            raise UsageError("give one --amount-sat for every --to and --to-wallet, in that order")
        to = list(args.to)
        if args.to_wallets:
            transfer = await service(c, "transfer_address")
            for name in args.to_wallets:
                to.append(await transfer(name, f"transfer from {args.wallet or 'the custody tier'}"))
        create = await service(c, "create_withdrawal")
        return await create(list(zip(to, args.amounts)), args.fee_rate, args.user, wallet=args.wallet)
    if args.action == "combine":
        combine = await service(c, "combine_withdrawal")
        return await combine(args.withdrawal_id, args.psbt)
    if args.action == "sign":
        sign = await service(c, "sign_withdrawal")
        return await sign(args.withdrawal_id, args.signer)
    if args.action == "bump":
        if len(args.to) != len(args.amounts):
            raise UsageError("give one --amount-sat for every --to")
        bump = await service(c, "bump_withdrawal")
        return await bump(args.withdrawal_id, args.fee_rate, list(zip(args.to, args.amounts)))
    if args.action == "void":
        void = await service(c, "void_withdrawal")
        return await void(args.withdrawal_id, args.fee_rate, args.signer, args.by)
    if args.action in ("cancel", "approve"):
        use_case = await service(c, f"{args.action}_withdrawal")
        return await use_case(args.withdrawal_id, args.by)
    if args.action == "payjoin":
        payjoin = await service(c, "payjoin_withdrawal")
        return await payjoin(args.uri, args.fee_rate, args.signer, args.max_additional_fee_sat, wallet=args.wallet,
                             user=args.user)
    if args.action == "cpfp":
        cpfp = await service(c, "cpfp_withdrawal")
        return await cpfp(args.withdrawal_id, args.fee_rate)
    use_case = await service(c, f"{args.action}_withdrawal")
    return await use_case(args.withdrawal_id)
