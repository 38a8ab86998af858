"""Exceptions to `{"error": {"code", "message"}}` and an HTTP status, once, at the boundary.
The codes are the command line's (each error's `code`)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError, RpcConfigError, redact_credentials
from kaccy_bitcoin.adapters.lnd.errors import LndError
from kaccy_bitcoin.adapters.sql.errors import StorageError
from kaccy_bitcoin.domain import errors as domain
from kaccy_bitcoin.domain.custody import InvalidCustodyConfig
from kaccy_bitcoin.ports.signer import SignerError


class ApiError(Exception):
    """An answer decided by the HTTP layer itself (bad request shape, auth, limits)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


_DOMAIN_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (domain.NotFound, 404),
    (domain.OrderConflict, 409),
    (domain.ConcurrentUpdate, 409),
    (domain.CoinsReserved, 409),
    (domain.IllegalTransition, 409),
    (domain.WithdrawalStateError, 409),
    (domain.InsufficientFunds, 422),
    (domain.LimitExceeded, 422),
    (domain.WithdrawalHeld, 409),
    (domain.WithdrawalReplaced, 409),
    (domain.FeeTooLow, 422),
    (domain.FeeTooHigh, 422),
    (domain.PaymentConflict, 409),
    (domain.FeeRateBelowMempoolMinimum, 422),
    (domain.UnknownWallet, 422),       # well formed; names a wallet this deployment does not have
    # The deployment is not set up for this request (no LND, no custody tiers): an operator's
    # setting, not this request's content nor a passing failure, can change the answer.
    (domain.LightningUnavailable, 409),
    (InvalidCustodyConfig, 409),
    (domain.NodesDiverged, 503),       # the Bitcoin nodes disagree: it passes when they agree again
    (domain.DomainError, 400),
)


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error a use case raised: the input (4xx) or what is behind (5xx)."""
    if isinstance(exc, ApiError):
        return exc.status
    for kind, status in _DOMAIN_STATUS:
        if isinstance(exc, kind):
            return status
    if getattr(exc, "code", None) == "config_error" or isinstance(exc, RpcConfigError):
        return 409   # the service is not set up for this (e.g. no signer): the message names the setting
    if isinstance(exc, (BitcoinCoreError, LndError, SignerError)):
        return 502
    if isinstance(exc, StorageError):
        return 503
    return 500


def error_body(exc: BaseException) -> dict[str, Any]:
    code = getattr(exc, "code", None) if status_of(exc) != 500 else "internal"
    message = str(exc) if code != "internal" else f"{type(exc).__name__}: {exc}"
    details = exc.details() if code != "internal" and hasattr(exc, "details") else {}
    return {"error": {"code": code or "error", "message": redact_credentials(message), **details}}
