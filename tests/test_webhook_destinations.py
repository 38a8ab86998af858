"""Webhooks cannot be aimed inside: the address rule, registration, and the aiohttp transport's
checks at delivery (the address checked is the address connected to; no redirects; at most 64 kB
of an answer read). Private addresses other than 127.0.0.1 appear only as strings refused before
any connection; the local receivers here stand for "inside" and must never be reached."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from kaccy_bitcoin.adapters.http_api.webhook_sender import MAX_ANSWER_BYTES, AiohttpWebhookTransport
from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.sql.service_store import SqlServiceStore
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory
from kaccy_bitcoin.application.api_access import RegisterWebhook
from kaccy_bitcoin.domain.errors import InvalidWebhookUrl
from kaccy_bitcoin.domain.webhook_destinations import refusal
from kaccy_bitcoin.ports.webhooks import WebhookUnreachable
from tests.conftest import fresh_engine
from tests.test_webhook_delivery import T0

REFUSED = ["127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.0.0.1", "172.16.5.4", "192.168.1.1",
           "169.254.169.254", "fe80::1", "fe80::1%eth0", "224.0.0.1", "ff02::1", "239.255.255.250",
           "100.64.0.1", "100.127.255.254", "fc00::1", "fd12:3456::1", "fec0::1", "240.0.0.1", "255.255.255.255",
           "192.0.0.8", "198.18.0.1", "192.0.2.1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
           "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::10.0.0.1", "2002:7f00:1::1", "2002:a00:1::"]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_inside_addresses_are_refused(address: str) -> None:
    assert refusal(address) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


class Stub(AbstractResolver):
    """DNS as the test says: host -> addresses, which can change between calls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for a in self.answers[host]]

    async def close(self) -> None:
        pass


class LocalReceiver:
    """An HTTP server on 127.0.0.1 counting what reaches it; `/hook` answers 204, `/moved` a 307
    to `/hook`, `/endless` 200 with a body that never ends."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(status=204)

    async def moved(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(status=307, headers={"Location": "/hook"})

    async def endless(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 16384
        try:
            while True:
                await response.write(chunk)
                await asyncio.sleep(0.001)
        except (ConnectionError, asyncio.CancelledError):
            return response

    async def __aenter__(self) -> LocalReceiver:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_post("/moved", self.moved)
        app.router.add_post("/endless", self.endless)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_delivery_checks_the_address_it_connects_to_and_dns_may_change() -> None:
    async with LocalReceiver() as inside:
        dns = Stub({"hooks.example.com": ["93.184.216.34"], "split.example.com": ["93.184.216.34", "10.0.0.1"]})
        transport = AiohttpWebhookTransport(timeout=5, resolver=dns)
        try:
            # Registration's view: a public address (never connected to here).
            assert await transport.addresses("hooks.example.com") == ["93.184.216.34"]
            # Then the name moves inside: the delivery is refused before any connection.
            dns.answers["hooks.example.com"] = ["127.0.0.1"]
            with pytest.raises(WebhookUnreachable, match="refused: hooks.example.com resolves to 127.0.0.1 is a loopback"):
                await transport.post(f"http://hooks.example.com:{inside.port}/hook", b"{}", {})
            with pytest.raises(WebhookUnreachable, match="10.0.0.1 is a private address"):
                await transport.post("http://split.example.com/hook", b"{}", {})
            for literal in (f"http://127.0.0.1:{inside.port}/hook", f"http://[::ffff:127.0.0.1]:{inside.port}/hook",
                            "http://169.254.169.254/latest/meta-data"):
                with pytest.raises(WebhookUnreachable, match="refused"):
                    await transport.post(literal, b"{}", {})
            assert inside.hits == []
            assert dns.asked == ["hooks.example.com", "hooks.example.com", "split.example.com"]
        finally:
            await transport.close()

        # Allowed: the connection goes to the address the resolver gave (the stub's 127.0.0.1).
        allowed = AiohttpWebhookTransport(timeout=5, allow_private=True, resolver=dns)
        try:
            assert await allowed.post(f"http://hooks.example.com:{inside.port}/hook", b"{}", {}) == 204
            assert inside.hits == ["/hook"]
        finally:
            await allowed.close()


async def test_redirects_are_not_followed_and_answers_are_read_up_to_64_kb() -> None:
    async with LocalReceiver() as receiver:
        transport = AiohttpWebhookTransport(timeout=8, allow_private=True)
        try:
            assert await transport.post(f"http://127.0.0.1:{receiver.port}/moved", b"{}", {}) == 307
            assert receiver.hits == ["/moved"]          # the Location was not followed
            started = time.monotonic()
            assert await transport.post(f"http://127.0.0.1:{receiver.port}/endless", b"{}", {}) == 200
            assert time.monotonic() - started < 4, "the endless answer was read past 64 kB"
            assert MAX_ANSWER_BYTES == 64 * 1024
            # The connection cut off mid-body is not reused: the next delivery works.
            assert await transport.post(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}) == 204
        finally:
            await transport.close()


async def test_registration_refuses_a_name_resolving_inside(tmp_path) -> None:  # noqa: ANN001
    engine = fresh_engine("sqlite", tmp_path)
    uow, store = SqlUnitOfWorkFactory(engine), SqlServiceStore(engine)
    dns = Stub({"in.example.com": ["93.184.216.34", "fd00::5"], "out.example.com": ["93.184.216.34"]})
    transport = AiohttpWebhookTransport(resolver=dns)
    try:
        register = RegisterWebhook(store, uow, ManualClock(T0), transport)
        with pytest.raises(InvalidWebhookUrl, match="fd00::5 is a private address") as refused:
            await register("https://in.example.com/hook", None, "k")
        assert refused.value.code == "invalid_webhook_url"
        with pytest.raises(InvalidWebhookUrl, match="loopback"):
            await register("http://[::1]:8080/hook", None, "k")
        assert store.webhooks() == []
        made = await register("https://out.example.com/hook", None, "k")     # public: taken
        assert made["url"] == "https://out.example.com/hook"
        assert (await register("https://not-resolving.example.com/", None, "k"))["webhook_id"]   # checked at delivery
        allowed = RegisterWebhook(store, uow, ManualClock(T0), transport, allow_private=True)
        assert (await allowed("https://in.example.com/hook", None, "k"))["webhook_id"]
        assert len(store.webhooks()) == 3
    finally:
        await transport.close()
        engine.dispose()
