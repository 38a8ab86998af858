"""HTTPS client for LND's REST gateway: macaroon header, TLS pinned to LND's own certificate,
retries with exponential backoff and jitter, LND's error bodies turned into typed errors.

Retried: a connection that could not be made (any method: nothing was sent), and for idempotent
calls also a dropped connection, a timeout, or a 502/503/504 without an LND error body. Never
retried: an answer from LND, an auth failure, a certificate that is not the pinned one.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from typing import Any, AsyncIterator

import aiohttp

from kaccy_bitcoin.adapters.net.http import HttpClients
from kaccy_bitcoin.adapters.lnd.errors import (
    LndAuthError,
    LndConfigError,
    LndError,
    LndProxyUnreachable,
    LndTlsError,
    LndUnreachable,
)

log = logging.getLogger(__name__)

# LND reports macaroon trouble as gRPC code 2 (Unknown, HTTP 500); these phrases are its own.
_AUTH_PHRASES = ("macaroon", "verification failed", "permission denied", "cannot get root key")
_RETRYABLE_STATUSES = {502, 503, 504}


class _Retry(Exception):
    """Internal: this attempt failed in a way worth trying again."""


def pinned_ssl_context(tls_cert_path: str) -> ssl.SSLContext:
    """A client context that trusts LND's certificate and nothing else."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_cert_path)
    except (OSError, ssl.SSLError) as exc:
        raise LndConfigError(f"cannot load LND's TLS certificate {tls_cert_path!r}: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context


def read_macaroon_hex(macaroon_path: str) -> str:
    try:
        with open(macaroon_path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise LndConfigError(f"cannot read LND's macaroon {macaroon_path!r}: {exc}") from exc
    if not raw:
        raise LndConfigError(f"LND's macaroon file {macaroon_path!r} is empty")
    return raw.hex()


def error_from_body(what: str, status: int, body: Any) -> LndError:
    """The typed error for an LND error body (`{"code", "message", "details"}`), or for a body
    that is not one."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]      # a streaming call that failed before its first message
    if isinstance(body, dict) and "message" in body:
        lnd_code, message = body.get("code"), str(body["message"])
        kind = LndAuthError if status in (401, 403) or any(p in message.lower() for p in _AUTH_PHRASES) else LndError
        return kind(f"{what}: LND error {lnd_code} (HTTP {status}): {message}",
                    lnd_code=lnd_code, lnd_message=message, http_status=status)
    kind = LndAuthError if status in (401, 403) else LndError
    return kind(f"{what}: HTTP {status} without an LND error body: {str(body)[:200]!r}", http_status=status)


class LndRestClient:
    def __init__(self, rest_url: str, *, macaroon_path: str, tls_cert_path: str, timeout: float = 30.0,
                 retries: int = 5, backoff: float = 0.2, max_backoff: float = 5.0,
                 http: HttpClients | None = None) -> None:
        if not rest_url.startswith("https://"):
            raise LndConfigError(f"LND's REST URL must be https://, got {rest_url!r}")
        self.url = rest_url.rstrip("/")
        self._macaroon = read_macaroon_hex(macaroon_path)
        self._ssl = pinned_ssl_context(tls_cert_path)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries, self._backoff, self._max_backoff = max(1, retries), backoff, max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._http = http or HttpClients()   # KACCY_PROXY: the container passes its own
        self.stats = {"requests": 0, "retries": 0}

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._http.session(connector_options={"ssl": self._ssl}, unreachable=LndProxyUnreachable,
                                               headers={"Grpc-Metadata-macaroon": self._macaroon})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None,
                      idempotent: bool | None = None) -> dict:
        """One call answered by one JSON object."""
        idempotent = method == "GET" if idempotent is None else idempotent
        what = f"{method} {path}"
        for attempt in range(1, self._retries + 1):
            try:
                return await self._attempt(method, path, params, body, idempotent, what)
            except _Retry as retry:
                if attempt == self._retries:
                    raise LndUnreachable(f"{what}: LND at {self.url} unreachable after {attempt} "
                                         f"attempts: {retry}") from retry.__cause__
                self.stats["retries"] += 1
                await self._sleep(attempt, what, retry)
        raise AssertionError("unreachable")

    async def _attempt(self, method: str, path: str, params: dict | None, body: dict | None,
                       idempotent: bool, what: str) -> dict:
        session = self._open_session()
        self.stats["requests"] += 1
        try:
            async with session.request(method, self.url + path, params=params, json=body,
                                       timeout=self._timeout) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError as exc:
            self._raise_for_transport(exc, idempotent, what)
        except asyncio.TimeoutError as exc:
            if idempotent:
                raise _Retry(f"timed out after {self._timeout.total}s") from exc
            raise LndUnreachable(f"{what}: no answer within {self._timeout.total}s (not retried: the "
                                 "call may have taken effect)") from exc
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        if status == 200 and isinstance(payload, dict):
            return payload
        if status in _RETRYABLE_STATUSES and idempotent and not (isinstance(payload, dict) and "message" in payload):
            raise _Retry(f"HTTP {status}")
        raise error_from_body(what, status, payload)

    def _raise_for_transport(self, exc: aiohttp.ClientError, idempotent: bool, what: str) -> None:
        if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)) or isinstance(
                getattr(exc, "os_error", None), ssl.SSLError):
            raise LndTlsError(f"{what}: the server at {self.url} did not present the pinned LND certificate: "
                              f"{exc}") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise _Retry(f"cannot connect: {exc}") from exc
        if idempotent and isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                                           aiohttp.ClientPayloadError)):
            raise _Retry(f"connection lost: {exc}") from exc
        raise LndUnreachable(f"{what}: connection to LND lost: {exc} (not retried: the call may have "
                             "taken effect)") from exc

    async def _sleep(self, attempt: int, what: str, reason: Exception) -> None:
        delay = min(self._max_backoff, self._backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        log.warning("%s: %s; retrying in %.2fs (attempt %d of %d)", what, reason, delay, attempt + 1, self._retries)
        await asyncio.sleep(delay)

    async def stream(self, method: str, path: str, *, params: dict | None = None,
                     body: dict | None = None) -> AsyncIterator[dict]:
        """A server-streaming call: each newline-delimited `{"result": ...}` object in turn, ending
        when LND ends the stream. An `{"error": ...}` line raises the typed error; a cut connection
        raises `LndUnreachable`.
        Connecting is retried like any call; nothing is retried once the stream has started."""
        what = f"{method} {path}"
        response = None
        for attempt in range(1, self._retries + 1):
            session = self._open_session()
            self.stats["requests"] += 1
            try:
                response = await session.request(method, self.url + path, params=params, json=body,
                                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total))
                break
            except aiohttp.ClientError as exc:
                try:
                    self._raise_for_transport(exc, False, what)
                except _Retry as retry:
                    if attempt == self._retries:
                        raise LndUnreachable(f"{what}: LND at {self.url} unreachable after {attempt} "
                                             f"attempts: {retry}") from exc
                    self.stats["retries"] += 1
                    await self._sleep(attempt, what, retry)
        assert response is not None
        async with response:
            if response.status != 200:
                text = await response.text()
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = text
                raise error_from_body(what, response.status, payload)
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message and message["error"]:
                        raise error_from_body(what, int(message["error"].get("http_code", 500) or 500),
                                              message["error"])
                    yield message["result"]
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise LndUnreachable(f"{what}: the stream from LND was cut: {exc}") from exc
