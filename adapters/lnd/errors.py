"""Errors of the LND adapter; each keeps what LND said (its gRPC code and message)."""
from __future__ import annotations

from kaccy_bitcoin.domain.errors import NotFound
from kaccy_bitcoin.ports.lightning import LightningNodeError, LightningNodeUnreachable


class LndError(LightningNodeError):
    """LND answered with an error body `{"code", "message", "details"}`."""

    code = "lnd_error"

    def __init__(self, message: str, *, lnd_code: int | None = None, lnd_message: str | None = None,
                 http_status: int | None = None) -> None:
        self.lnd_code = lnd_code
        self.lnd_message = lnd_message
        self.http_status = http_status
        super().__init__(message)


class LndAuthError(LndError):
    """LND refused the macaroon (missing, wrong, or for another node)."""

    code = "lnd_auth_failed"


class LndTlsError(LndError):
    """The server's certificate is not the pinned LND certificate."""

    code = "lnd_tls_error"


class LndUnreachable(LndError, LightningNodeUnreachable):
    """LND could not be reached after the retries, or the connection was lost mid-stream."""

    code = "lnd_unreachable"


class LndProxyUnreachable(LndUnreachable):
    """KACCY_PROXY is set and the proxy cannot be reached: nothing was sent to LND."""

    code = "proxy_unreachable"


class LndInvoiceNotFound(LndError, NotFound):
    code = "lnd_invoice_not_found"


class LndConfigError(LndError, ValueError):
    """The adapter's settings cannot work (not an https URL, unreadable certificate or macaroon)."""

    code = "config_error"
    exit_status = 2
