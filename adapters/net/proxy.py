"""KACCY_PROXY and KACCY_PROXY_EXCEPT read into `ProxySettings` (dependency-free: the settings
are checked when they are loaded, before any library that connects is imported)."""
from __future__ import annotations

import ipaddress
from typing import Iterable
from urllib.parse import unquote, urlsplit

import attrs

from kaccy_bitcoin.adapters.net.errors import ProxyConfigError

SCHEMES = ("socks5h", "socks5")


def _host_key(host: str) -> str:
    """A host name or address as compared with the exception list: lowercase, no trailing dot,
    an IPv6 address in its compressed form without brackets."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


@attrs.frozen
class ProxySettings:
    """A SOCKS5 proxy (`host`, `port`, optional credentials) and the hosts reached without it."""

    host: str
    port: int
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    direct_hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, url: str, except_hosts: str | Iterable[str] | None = None) -> ProxySettings:
        """KACCY_PROXY (`socks5h://[user:password@]HOST:PORT`, or `socks5://`) and
        KACCY_PROXY_EXCEPT (host names, comma-separated)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ProxyConfigError(f"KACCY_PROXY {url!r} cannot be parsed: {exc}") from None
        if parts.scheme.lower() not in SCHEMES:
            raise ProxyConfigError(f"KACCY_PROXY must be a socks5h://HOST:PORT URL (or socks5://), got scheme "
                                   f"{parts.scheme or 'none'!r}")
        if not parts.hostname or port is None or port == 0:
            raise ProxyConfigError(f"KACCY_PROXY must name the proxy's host and port (socks5h://HOST:PORT, e.g. "
                                   f"socks5h://127.0.0.1:9050 for Tor), got {parts.netloc!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ProxyConfigError("KACCY_PROXY is socks5h://HOST:PORT, with no path, query or fragment")
        if isinstance(except_hosts, str) or except_hosts is None:
            except_hosts = (except_hosts or "").split(",")
        direct = frozenset(_host_key(h) for h in except_hosts if h.strip())
        for host in direct:
            if "/" in host or ":" in host and not _is_ip(host) or " " in host:
                raise ProxyConfigError(f"KACCY_PROXY_EXCEPT lists host names (comma-separated), got {host!r}")
        return cls(parts.hostname, port, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None, direct)

    def bypasses(self, host: str) -> bool:
        """Whether `host` is reached directly (listed in KACCY_PROXY_EXCEPT)."""
        return _host_key(host) in self.direct_hosts

    def public(self) -> str:
        """The proxy's address without its credentials, for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"socks5h://{host}:{self.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
