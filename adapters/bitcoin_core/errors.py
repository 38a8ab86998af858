"""Errors of the Bitcoin Core adapter; each keeps what the node said."""
from __future__ import annotations

import re

from kaccy_bitcoin.domain.errors import KaccyError

# The user:password part of a URL (scheme://user:password@host), up to the last @ of the token.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@:]*:[^\s/]*@")


def redact_credentials(text: str) -> str:
    """`text` with the user:password of every URL in it replaced by ***. Here, not in rpc.py,
    so the command line can redact its messages without importing aiohttp."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


class BitcoinCoreError(KaccyError):
    code = "node_error"


class RpcError(BitcoinCoreError):
    """The node answered with a JSON-RPC error; `rpc_code` and `rpc_message` are Core's."""

    code = "rpc_error"

    # Core's codes (src/rpc/protocol.h) that the adapter treats specially.
    IN_WARMUP = -28
    INVALID_ADDRESS_OR_KEY = -5
    WALLET_NOT_FOUND = -18
    WALLET_ALREADY_LOADED = -35
    WALLET_ALREADY_EXISTS = -4

    def __init__(self, method: str, rpc_code: int, rpc_message: str) -> None:
        self.method = method
        self.rpc_code = rpc_code
        self.rpc_message = rpc_message
        super().__init__(f"{method}: RPC error {rpc_code}: {rpc_message}")


class RpcConnectionError(BitcoinCoreError):
    """The node could not be reached (after retries) or answered outside JSON-RPC."""

    code = "node_unreachable"


class NodeProxyUnreachable(RpcConnectionError):
    """KACCY_PROXY is set and the proxy cannot be reached: nothing was sent to the node (not
    retried, never sent directly instead)."""

    code = "proxy_unreachable"


class RpcAuthError(BitcoinCoreError):
    """HTTP 401/403: wrong user/password or a stale cookie."""

    code = "node_auth_failed"


class RpcConfigError(BitcoinCoreError, ValueError):
    """The RPC settings cannot work (not an http(s) URL, credentials inside the URL)."""

    code = "config_error"
    exit_status = 2
