"""Sending a webhook delivery: one HTTP POST to a receiver."""
from __future__ import annotations

import abc
from typing import Mapping


class WebhookTransport(abc.ABC):
    @abc.abstractmethod
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body` to `url`; the HTTP status of the answer. Raises WebhookUnreachable
        when no answer came (refused, reset, timed out)."""


class WebhookUnreachable(Exception):
    code = "webhook_unreachable"
