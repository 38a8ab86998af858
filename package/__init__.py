"""kaccy-bitcoin: Bitcoin for the Kaccy Protocol, as a library.

    from kaccy_bitcoin import KaccyBitcoin, KaccyError

    async with KaccyBitcoin.from_env() as kaccy:
        order = await kaccy.create_order("order-42", 125_000)

The names below are imported when first used, so `import kaccy_bitcoin` (and the command
line, which imports `kaccy_bitcoin.bootstrap.cli`) costs nothing: see bootstrap/facade.py for
the object, application/results.py for what its methods return, domain/errors.py and each
adapter's errors module for what they raise (all `KaccyError`, each with a `.code`).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KaccyBitcoin": "kaccy_bitcoin.bootstrap.facade",
    "KaccyError": "kaccy_bitcoin.domain.errors",
    "InternalError": "kaccy_bitcoin.domain.errors",
    "DomainError": "kaccy_bitcoin.domain.errors",
    "NotFound": "kaccy_bitcoin.domain.errors",
    "InvalidAmount": "kaccy_bitcoin.domain.errors",
    "InvalidAddress": "kaccy_bitcoin.domain.errors",
    "InvalidFeeRate": "kaccy_bitcoin.domain.errors",
    "InvalidOrder": "kaccy_bitcoin.domain.errors",
    "OrderConflict": "kaccy_bitcoin.domain.errors",
    "InsufficientFunds": "kaccy_bitcoin.domain.errors",
    "CoinsReserved": "kaccy_bitcoin.domain.errors",
    "ConcurrentUpdate": "kaccy_bitcoin.domain.errors",
    "WithdrawalStateError": "kaccy_bitcoin.domain.errors",
    "FeeTooLow": "kaccy_bitcoin.domain.errors",
    "InvalidEventRequest": "kaccy_bitcoin.domain.errors",
    "ConfigError": "kaccy_bitcoin.bootstrap.config",
    "BitcoinCoreError": "kaccy_bitcoin.adapters.bitcoin_core.errors",
    "StorageError": "kaccy_bitcoin.adapters.sql.errors",
    "SignerError": "kaccy_bitcoin.ports.signer",
    "LndError": "kaccy_bitcoin.adapters.lnd.errors",
    "OrderCreated": "kaccy_bitcoin.application.results",
    "OrderView": "kaccy_bitcoin.application.results",
    "Withdrawal": "kaccy_bitcoin.application.results",
    "Risk": "kaccy_bitcoin.application.results",
    "WithdrawalStep": "kaccy_bitcoin.application.results",
    "VoidedWithdrawal": "kaccy_bitcoin.application.results",
    "LightningPayment": "kaccy_bitcoin.application.results",
    "Channel": "kaccy_bitcoin.application.results",
    "OrderInvoiceCreated": "kaccy_bitcoin.application.results",
    "OrderInvoice": "kaccy_bitcoin.application.results",
    "LightningNodeError": "kaccy_bitcoin.ports.lightning",
    "EventPage": "kaccy_bitcoin.application.results",
    "StoredEvent": "kaccy_bitcoin.domain.events",
    "DomainEvent": "kaccy_bitcoin.domain.events",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kaccy_bitcoin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
