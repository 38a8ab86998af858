"""Webhook deliveries over aiohttp: one pooled session, a bounded wait for each answer.

Where a delivery may go is checked on the address it connects to (domain/webhook_destinations.py):
the session's connector resolves names through `CheckedResolver`, which refuses the whole name
when any address it resolves to is not public, so the address checked is the address connected
to (no second lookup an attacker's DNS could answer differently). A URL written with an IP
literal never reaches a resolver; `post` checks it itself. Redirects are not followed (a 3xx is a
failed delivery) and at most 64 kB of an answer's body is read.

With KACCY_PROXY, a host name that goes through the proxy is resolved by the proxy, never here (a
lookup here would tell the local resolver whom we deliver to): only an IP literal and the
`localhost` names (RFC 6761: loopback by definition) can be checked; the proxy's network decides
where the others lead (Tor refuses internal addresses). A proxy that cannot be reached fails the
delivery (retried later), never a direct connection.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from kaccy_bitcoin.adapters.net.errors import ProxyUnreachable
from kaccy_bitcoin.adapters.net.http import HttpClients
from kaccy_bitcoin.domain.webhook_destinations import literal_address, refusal, webhook_host
from kaccy_bitcoin.ports.webhooks import WebhookTransport, WebhookUnreachable

MAX_ANSWER_BYTES = 64 * 1024
RESOLVE_TIMEOUT = 5.0


class DestinationRefused(OSError):
    """A webhook's host resolves to an address webhooks may not go to (an OSError, so aiohttp
    reports it as the connection failing, before any connection is made)."""


class CheckedResolver(AbstractResolver):
    """Resolves with `inner` (the system's resolver by default), then checks every address."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner

    def _resolver(self) -> AbstractResolver:
        if self._inner is None:
            self._inner = ThreadedResolver()
        return self._inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver().resolve(host, port, family)
        if not self._allow_private:
            for result in found:
                why = refusal(result["host"])
                if why is not None:
                    raise DestinationRefused(f"refused: {host} resolves to {why}")
        return found

    async def addresses(self, host: str) -> list[str]:
        """Every address `host` resolves to (unchecked); empty when it does not resolve."""
        try:
            found = await asyncio.wait_for(self._resolver().resolve(host, 0, socket.AF_UNSPEC), RESOLVE_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return []
        return sorted({r["host"] for r in found})

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class AiohttpWebhookTransport(WebhookTransport):
    def __init__(self, timeout: float = 10.0, allow_private: bool = False,
                 resolver: AbstractResolver | None = None, http: HttpClients | None = None) -> None:
        self._http = http or HttpClients()   # KACCY_PROXY: the container passes its own
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._allow_private = allow_private
        self._resolver = CheckedResolver(allow_private, resolver)
        self._session: aiohttp.ClientSession | None = None

    async def addresses(self, host: str) -> list[str]:
        literal = literal_address(host)
        if literal is not None:
            return [literal.compressed]
        if self._http.proxied(host):   # resolved by the proxy, not here
            return ["127.0.0.1"] if _is_localhost(host) else []
        return await self._resolver.addresses(host)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._http.session(resolver=self._resolver, timeout=self._timeout)
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        host = webhook_host(url)
        literal = literal_address(host)
        if literal is None and self._http.proxied(host) and _is_localhost(host):
            literal = literal_address("127.0.0.1")
        why = None if literal is None or self._allow_private else refusal(literal)
        if why is not None:
            raise WebhookUnreachable(f"refused: {why}")
        try:
            async with self._open().post(url, data=body, headers=dict(headers), allow_redirects=False) as resp:
                await _read_at_most(resp, MAX_ANSWER_BYTES)
                return resp.status
        except ProxyUnreachable as exc:
            raise WebhookUnreachable(f"{exc.code}: {exc}"[:300]) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
            if isinstance(cause, DestinationRefused):
                raise WebhookUnreachable(str(cause)[:300]) from None
            raise WebhookUnreachable(f"{type(exc).__name__}: {exc}"[:300]) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()   # closes the connector, and with it the resolver


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> None:
    """Read the answer's body up to `limit` bytes; a longer one is cut off with its connection
    (never pooled half-read), so a receiver cannot hold a delivery with an endless body."""
    left = limit
    while left > 0:
        chunk = await resp.content.read(left)
        if not chunk:
            return
        left -= len(chunk)
    if not resp.content.at_eof():
        resp.close()
