"""The one place outgoing HTTP sessions are made: every adapter (the node's RPC, LND, webhook
deliveries, ...) asks `HttpClients` for its aiohttp session, and with `KACCY_PROXY` set that
session connects through the SOCKS5 proxy.

Through the proxy, host names are sent to it as names (SOCKS5 address type 3, "remote DNS"), so
nothing is looked up on this machine and `.onion` hosts work; `socks5://` is taken as
`socks5h://` for the same reason (aiohttp-socks and python-socks know only `socks5`: `rdns=True`
is what the `h` asks for). Hosts listed in `KACCY_PROXY_EXCEPT` are connected to directly, resolved here.
When the proxy cannot be reached the request fails with `ProxyUnreachable` (or the adapter's
own error of code `proxy_unreachable`, so its callers treat it as that remote being unreachable);
it is never made directly instead.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Any

import aiohttp
import aiohttp_socks
import python_socks
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from kaccy_bitcoin.adapters.net.errors import ProxyConfigError, ProxyUnreachable
from kaccy_bitcoin.adapters.net.proxy import ProxySettings


class _RoutedResolver(AbstractResolver):
    """Names going through the proxy are not looked up here (they go to the proxy as they
    are); names of the exception list are resolved by `direct`."""

    def __init__(self, proxy: ProxySettings, direct: AbstractResolver) -> None:
        self._proxy = proxy
        self._direct = direct

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._proxy.bypasses(host):
            return await self._direct.resolve(host, port, family)
        return [{"hostname": host, "host": host, "port": port, "family": family, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        await self._direct.close()


class ProxiedConnector(aiohttp_socks.ProxyConnector):
    """aiohttp-socks' connector (SOCKS5, names sent to the proxy) that connects directly to the
    hosts of the exception list, and turns the proxy's failures into `unreachable`. TLS (LND's
    pinned certificate) is negotiated with the final host, inside the tunnel, under its name."""

    def __init__(self, proxy: ProxySettings, *, resolver: AbstractResolver | None = None,
                 unreachable: type[Exception] = ProxyUnreachable, **options: Any) -> None:
        super().__init__(host=proxy.host, port=proxy.port, proxy_type=python_socks.ProxyType.SOCKS5,
                         username=proxy.username, password=proxy.password, rdns=True, **options)
        # aiohttp-socks looks up nothing (its NoResolver); the exception list's hosts are looked up
        # by `resolver`, closed with the connector.
        self._resolver = _RoutedResolver(proxy, resolver or DefaultResolver())
        self._resolver_owner = True
        self._proxy = proxy
        self._unreachable = unreachable

    async def _wrap_create_connection(self, *args: Any, addr_infos: list[Any], req: aiohttp.ClientRequest,
                                      timeout: aiohttp.ClientTimeout,
                                      client_error: type[Exception] = aiohttp.ClientConnectorError,
                                      **kwargs: Any) -> tuple[asyncio.Transport, Any]:
        direct = req.url.host is not None and self._proxy.bypasses(req.url.host)
        try:
            if direct:   # TCPConnector's own connection, to the address the direct resolver found
                return await aiohttp.TCPConnector._wrap_create_connection(
                    self, *args, addr_infos=addr_infos, req=req, timeout=timeout, client_error=client_error, **kwargs)
            return await super()._wrap_create_connection(*args, addr_infos=addr_infos, req=req, timeout=timeout,
                                                         client_error=client_error, **kwargs)
        except (aiohttp_socks.ProxyConnectionError, aiohttp_socks.ProxyTimeoutError) as exc:
            raise self._unreachable(f"the proxy {self._proxy.public()} (KACCY_PROXY) cannot be reached: {exc}; "
                                    f"nothing was sent to {req.url.host}:{req.url.port}") from None
        except aiohttp_socks.ProxyError as exc:
            if exc.error_code is None:   # no CONNECT reply: the handshake failed (not SOCKS5, credentials refused)
                raise self._unreachable(f"the proxy {self._proxy.public()} (KACCY_PROXY) failed the SOCKS5 "
                                        f"handshake: {exc}") from None
            # The proxy answered: the host behind it cannot be reached (refused, unreachable, ...).
            raise client_error(req.connection_key, ConnectionRefusedError(
                errno.ECONNREFUSED, f"through the proxy {self._proxy.public()}: {exc}")) from exc
        except ssl.CertificateError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:   # direct: aiohttp's own error; through the proxy: it dropped the handshake
            if direct:
                raise
            raise self._unreachable(f"the proxy {self._proxy.public()} (KACCY_PROXY) failed: {exc}; nothing "
                                    f"was sent to {req.url.host}:{req.url.port}") from None


class HttpClients:
    """The factory of every outgoing aiohttp session and connector; `proxy` None: direct."""

    def __init__(self, proxy: ProxySettings | None = None) -> None:
        self.proxy = proxy

    @classmethod
    def from_settings(cls, proxy_url: str | None, except_hosts: str | None) -> HttpClients:
        """From KACCY_PROXY and KACCY_PROXY_EXCEPT (an exception list alone is refused: it says the
        operator meant a proxy)."""
        if not proxy_url:
            if except_hosts:
                raise ProxyConfigError("KACCY_PROXY_EXCEPT is set but KACCY_PROXY is not")
            return cls(None)
        return cls(ProxySettings.parse(proxy_url, except_hosts))

    def proxied(self, host: str) -> bool:
        """Whether a connection to `host` goes through the proxy."""
        return self.proxy is not None and not self.proxy.bypasses(host)

    def connector(self, *, resolver: AbstractResolver | None = None, unreachable: type[Exception] = ProxyUnreachable,
                  **options: Any) -> aiohttp.BaseConnector:
        """A connector with aiohttp's TCPConnector `options` (limit, ssl, ...); `resolver` resolves
        the names connected to directly; `unreachable` is the adapter's error for a proxy that cannot
        be reached (code `proxy_unreachable`; never an OSError, TimeoutError or aiohttp.ClientError,
        which aiohttp would wrap and the adapters retry as their remote being down)."""
        if self.proxy is None:
            return aiohttp.TCPConnector(resolver=resolver, **options)
        return ProxiedConnector(self.proxy, resolver=resolver, unreachable=unreachable, **options)

    def session(self, *, resolver: AbstractResolver | None = None, unreachable: type[Exception] = ProxyUnreachable,
                connector_options: dict[str, Any] | None = None, **session_options: Any) -> aiohttp.ClientSession:
        """A ClientSession on a connector of its own. Environment proxies (HTTP_PROXY, ...) are never
        used: the only proxy is KACCY_PROXY."""
        session_options.setdefault("trust_env", False)
        connector = self.connector(resolver=resolver, unreachable=unreachable, **(connector_options or {}))
        return aiohttp.ClientSession(connector=connector, **session_options)
