"""Sending a webhook delivery: one HTTP POST to a receiver."""
from __future__ import annotations

import abc
from typing import Mapping


class WebhookTransport(abc.ABC):
    @abc.abstractmethod
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body` to `url`; the HTTP status of the answer. Raises WebhookUnreachable
        when no answer came (refused, reset, timed out), or when the URL's host is one webhooks
        may not go to (domain/webhook_destinations.py), checked on the address connected to."""

    @abc.abstractmethod
    async def addresses(self, host: str) -> list[str]:
        """The IP addresses `host` resolves to now (an IP literal: itself); empty when it does
        not resolve."""


class WebhookUnreachable(Exception):
    code = "webhook_unreachable"
