"""Errors of the outgoing connections (dependency-free, so the command line can name them
without importing aiohttp or stem)."""
from __future__ import annotations

from kaccy_bitcoin.domain.errors import KaccyError


class ProxyUnreachable(KaccyError):
    """KACCY_PROXY is set and the SOCKS5 proxy could not be reached (refused, timed out, or it
    did not speak SOCKS5). The call fails: it never falls back to a direct connection.

    Deliberately not an OSError nor an aiohttp.ClientError: the adapters' retry loops treat those
    as a remote that is down; this one passes through them and reaches the caller at once."""

    code = "proxy_unreachable"
    exit_status = 1


class ProxyConfigError(KaccyError, ValueError):
    """KACCY_PROXY or KACCY_PROXY_EXCEPT cannot work (another scheme, no port, ...)."""

    code = "config_error"
    exit_status = 2


class TorControlFailed(KaccyError):
    """Tor's control port could not be reached, refused the authentication, or refused to
    publish the onion service."""

    code = "tor_control_failed"
    exit_status = 1
