"""`kaccy-bitcoin audit`: the hash-chained audit trail."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, int_in_range, moment, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "audit"


class AuditBroken(Exception):
    """`audit verify` found the chain broken: its answer is printed as it is, and the exit is 1."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer)
        self.answer = answer


def register(sub: Any) -> None:
    audit = actions(sub.add_parser(NAME, help="the hash-chained audit trail"))
    audit.add_parser("verify", help="check every entry's hash and link: {ok, entries, head} or {ok: false, "
                                    "first_bad, ...} (exit 1)")
    aq = audit.add_parser("query", help="entries about a subject and/or since a time, oldest first")
    aq.add_argument("--subject", default=None, help="a withdrawal id, order id, user...")
    aq.add_argument("--since", type=moment, default=None, help="ISO 8601 time (UTC unless it says), or Unix seconds")
    aq.add_argument("--limit", type=int_in_range("--limit", 1, 100_000), default=1000)


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "verify":
        answer = await (await service(c, "verify_audit"))()
        if not answer["ok"]:
            raise AuditBroken(answer)
        return answer
    query = await service(c, "query_audit")
    return await query(args.subject, args.since, args.limit)
