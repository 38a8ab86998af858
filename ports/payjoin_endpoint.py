"""A payjoin receiver's endpoint (BIP78 v1), as the sender sees it: one POST of the original."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.errors import KaccyError


class PayjoinRequestFailed(KaccyError):
    """No proposal came back; `reason` is the withdrawal's fallback reason: `timeout`,
    `unreachable`, `receiver_error:<errorCode>` (BIP78's well-known codes, else `other`), or
    `invalid_response` (an answer that is neither a proposal nor BIP78's error JSON)."""

    code = "payjoin_request_failed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PayjoinEndpoint(abc.ABC):
    @abc.abstractmethod
    async def request(self, url: str, original_psbt: str, timeout_seconds: float) -> str:
        """POST the base64 `original_psbt` (text/plain) to `url` (the query already added) and
        return the receiver's base64 proposal; PayjoinRequestFailed when there is none within
        `timeout_seconds` or the receiver answers with an error."""
