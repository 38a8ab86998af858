"""Webhook deliveries over aiohttp: one pooled session, a bounded wait for each answer."""
from __future__ import annotations

import asyncio
from typing import Mapping

import aiohttp

from kaccy_bitcoin.ports.webhooks import WebhookTransport, WebhookUnreachable


class AiohttpWebhookTransport(WebhookTransport):
    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise WebhookUnreachable(f"{type(exc).__name__}: {exc}"[:300]) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
