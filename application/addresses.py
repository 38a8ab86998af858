"""Use case: read the address book (BIP329 records), a page at a time."""
from __future__ import annotations

import json
from typing import Any

from kaccy_bitcoin.ports.storage import UnitOfWorkFactory


class ListAddresses:
    """`{"addresses": [BIP329 records], "next": OFFSET or None}`, ordered by chain and index."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        with self._uow.read() as uow:
            entries = uow.addresses.entries()
        page = entries[offset:offset + limit]
        more = offset + limit < len(entries)
        return {"addresses": [json.loads(e.bip329()) for e in page], "next": offset + limit if more else None}
