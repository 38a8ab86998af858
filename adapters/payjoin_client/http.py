"""BIP78 v1 over HTTP with aiohttp: POST the original, read the proposal or the error JSON.

Redirects are not followed (the endpoint's scheme was checked; a redirect could lead anywhere);
the answer is read up to a bound; a receiver's own error text is logged, never shown."""
from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from kaccy_bitcoin.adapters.net.errors import ProxyUnreachable
from kaccy_bitcoin.adapters.net.http import HttpClients
from kaccy_bitcoin.domain.payjoin_uri import receiver_error_reason
from kaccy_bitcoin.ports.payjoin_endpoint import PayjoinEndpoint, PayjoinRequestFailed

log = logging.getLogger(__name__)
MAX_ANSWER = 1_000_000   # bytes: a proposal is a transaction of a few inputs, in base64


class AiohttpPayjoinEndpoint(PayjoinEndpoint):
    def __init__(self, http: HttpClients | None = None) -> None:
        self._http = http or HttpClients()   # KACCY_PROXY: a .onion endpoint through Tor, like every connection

    async def request(self, url: str, original_psbt: str, timeout_seconds: float) -> str:
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        try:
            async with self._http.session(timeout=timeout) as session:
                async with session.post(url, data=original_psbt.encode("ascii"), allow_redirects=False,
                                        headers={"Content-Type": "text/plain"}) as answer:
                    body = await answer.content.read(MAX_ANSWER + 1)
                    status = answer.status
        except asyncio.TimeoutError:
            raise PayjoinRequestFailed("timeout", f"no answer from the payjoin endpoint within {timeout_seconds} s") \
                from None
        except ProxyUnreachable as exc:
            raise PayjoinRequestFailed("proxy_unreachable", str(exc)) from None
        except aiohttp.ClientError as exc:
            raise PayjoinRequestFailed("unreachable", f"the payjoin endpoint could not be reached: {exc}") from None
        if len(body) > MAX_ANSWER:
            raise PayjoinRequestFailed("invalid_response", f"the payjoin endpoint answered over {MAX_ANSWER} bytes")
        text = body.decode("utf-8", errors="replace").strip()
        if status == 200:
            return text
        try:
            error = json.loads(text)
            code = error.get("errorCode") if isinstance(error, dict) else None
        except ValueError:
            code = None
        log.info("payjoin endpoint answered %s: %s", status, text[:500])
        if not isinstance(code, str):
            raise PayjoinRequestFailed("invalid_response", f"the payjoin endpoint answered HTTP {status} "
                                                           "without BIP78's error JSON")
        reason = receiver_error_reason(code)
        raise PayjoinRequestFailed(reason, f"the payjoin receiver refused (HTTP {status}, {reason})")
