"""`kaccy-bitcoin db`: the database (the only group that runs on an older schema)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "db"


def register(sub: Any) -> None:
    db = actions(sub.add_parser(NAME, help="the database"))
    db.add_parser("upgrade", help="migrate the database to this release's schema (the only command that "
                                  "runs on an older one)")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.adapters.sql import migrations
    from kaccy_bitcoin.adapters.sql.storage import make_engine

    engine = make_engine(c.config.database_url(), check_schema=False)
    try:
        before, after = migrations.upgrade(engine)
    finally:
        engine.dispose()
    return {"database": "upgraded", "from": before, "to": after}
