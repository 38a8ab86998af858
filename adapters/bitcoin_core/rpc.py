"""JSON-RPC client for Bitcoin Core: one pooled keep-alive aiohttp session, batching,
retries with exponential backoff and jitter, cookie or user/password auth.

Retried: connection failures, timeouts, HTTP 5xx without a JSON-RPC body (e.g. a full
work queue), and RPC -28 (node warming up). Never retried: a real RPC error, which is
raised as `RpcError` with Core's code and message. Amounts in results are `Decimal`.
No message shows a URL's user:password.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
import time
from decimal import Decimal
from typing import Any, Sequence

import aiohttp

from kaccy_bitcoin.adapters.net.http import HttpClients
from kaccy_bitcoin.adapters.observability import rpc_done
from kaccy_bitcoin.adapters.bitcoin_core.errors import (
    NodeProxyUnreachable,
    RpcAuthError,
    RpcConfigError,
    RpcConnectionError,
    RpcError,
    redact_credentials,
)

log = logging.getLogger(__name__)
Call = tuple[str, Sequence[Any]]


class _Retry(Exception):
    """Internal: this attempt failed in a way worth trying again."""


class BitcoinRpc:
    def __init__(self, url: str, *, user: str | None = None, password: str | None = None,
                 cookie_file: str | None = None, timeout: float = 60.0, retries: int = 6,
                 backoff: float = 0.1, max_backoff: float = 5.0, max_concurrency: int = 8,
                 session: aiohttp.ClientSession | None = None, http: HttpClients | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise RpcConfigError(f"KACCY_BITCOIN_RPC_URL must be an http(s) URL, got {redact_credentials(url)!r}")
        if redact_credentials(url) != url:
            raise RpcConfigError(f"KACCY_BITCOIN_RPC_URL {redact_credentials(url)!r} carries credentials: give them "
                                 "in KACCY_BITCOIN_RPC_USER and _PASSWORD (or KACCY_BITCOIN_RPC_COOKIE) instead")
        if cookie_file is None and user is None:
            raise RpcConfigError("give KACCY_BITCOIN_RPC_USER and _PASSWORD, or KACCY_BITCOIN_RPC_COOKIE")
        self.url = url.rstrip("/")
        self._user, self._password, self._cookie_file = user, password, cookie_file
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries, self._backoff, self._max_backoff = retries, backoff, max_backoff
        self._session = session
        self._http = http or HttpClients()   # KACCY_PROXY: the container passes its own
        self._owns_session = session is None
        self._limit = asyncio.Semaphore(max_concurrency)
        self._ids = itertools.count(1)
        self._auth_header: str | None = None
        self.stats = {"requests": 0, "calls": 0, "retries": 0}

    # -- lifecycle ---------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._http.session(connector_options={"limit": 16, "keepalive_timeout": 30},
                                               timeout=self._timeout, unreachable=NodeProxyUnreachable)
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> BitcoinRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _auth(self, refresh: bool = False) -> str:
        if self._auth_header is None or refresh:
            if self._cookie_file:
                try:
                    with open(self._cookie_file, encoding="utf-8") as f:
                        credentials = f.read().strip()
                except OSError as exc:
                    # The node deletes its cookie when it stops and writes a new one when it
                    # starts: a missing cookie means "not up (yet)", worth waiting for.
                    raise _Retry(f"cannot read RPC cookie file {self._cookie_file}: {exc.strerror}") from None
            else:
                credentials = f"{self._user}:{self._password or ''}"
            self._auth_header = "Basic " + base64.b64encode(credentials.encode()).decode()
        return self._auth_header

    # -- calls -------------------------------------------------------------------
    async def call(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        """One RPC call; raises RpcError on an RPC error."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        started = time.perf_counter()
        ok = False
        try:
            reply = await self._post(payload, wallet, method)
            result = self._result(method, reply)
            ok = True
            return result
        finally:
            rpc_done(method, time.perf_counter() - started, ok)

    async def batch(self, calls: Sequence[Call], wallet: str | None = None) -> list[Any]:
        """Many calls in one HTTP request; each slot holds a result or an RpcError (not raised)."""
        if not calls:
            return []
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)]
        started = time.perf_counter()
        try:
            replies = await self._post(payload, wallet, f"batch of {len(calls)}")
        except Exception:
            rpc_done("batch:" + calls[0][0], time.perf_counter() - started, False)
            raise
        rpc_done("batch:" + calls[0][0], time.perf_counter() - started, True)
        if not isinstance(replies, list):
            raise RpcConnectionError(f"batch answered with {type(replies).__name__}, not a list")
        by_id = {r.get("id"): r for r in replies}
        out: list[Any] = []
        for i, (method, _) in enumerate(calls):
            reply = by_id.get(i)
            if reply is None:
                out.append(RpcError(method, -32603, "no reply in batch"))
                continue
            try:
                out.append(self._result(method, reply))
            except RpcError as err:
                out.append(err)
        return out

    @staticmethod
    def _result(method: str, reply: dict[str, Any]) -> Any:
        error = reply.get("error")
        if error:
            raise RpcError(method, int(error.get("code", -1)), str(error.get("message", "")))
        return reply.get("result")

    async def _post(self, payload: Any, wallet: str | None, what: str) -> Any:
        url = f"{self.url}/wallet/{wallet}" if wallet else self.url
        body = json.dumps(payload, default=_json_default)
        delay = self._backoff
        refreshed = False
        for attempt in range(self._retries + 1):
            try:
                async with self._limit:
                    if self._cookie_file and attempt:
                        self._auth(refresh=True)
                    return await self._attempt(url, body, what)
            except RpcAuthError:
                if self._cookie_file and not refreshed:
                    refreshed = True  # the node restarted and wrote a new cookie: read it again
                    self._auth_header = None
                    continue
                raise
            except _Retry as why:
                if attempt == self._retries:
                    raise RpcConnectionError(f"{what}: {why} (gave up after {attempt + 1} attempts)") from None
                self.stats["retries"] += 1
                log.debug("retrying %s after %s", what, why)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._max_backoff)
        raise RpcConnectionError(f"{what}: no attempt made")

    async def _attempt(self, url: str, body: str, what: str) -> Any:
        headers = {"Authorization": self._auth(), "Content-Type": "application/json"}
        self.stats["requests"] += 1
        self.stats["calls"] += body.count('"method"')
        try:
            async with self._get_session().post(url, data=body, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            raise _Retry(redact_credentials(f"{type(exc).__name__}: {exc}")) from None
        if status in (401, 403):
            raise RpcAuthError(f"{what}: node refused the credentials (HTTP {status})")
        try:
            reply = json.loads(text, parse_float=Decimal) if text else None
        except ValueError:
            reply = None
        if reply is None:
            if status >= 500 or status == 0:
                raise _Retry(f"HTTP {status}: {text[:200]!r}")
            raise RpcConnectionError(
                redact_credentials(f"{what}: HTTP {status} without a JSON-RPC body: {text[:200]!r}"))
        warming = reply if isinstance(reply, list) else [reply]
        if any((r.get("error") or {}).get("code") == RpcError.IN_WARMUP for r in warming if isinstance(r, dict)):
            raise _Retry("node is warming up (-28)")
        return reply


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} over JSON-RPC")
