"""The customer's checkout page in a real browser (headless Chromium) against a running `serve` on
regtest with the fake LND: the QR code read from a screenshot is the order's unified payment URI;
paying on chain moves the page to "paid" without a reload; an underpaid order shows the rest due
and a QR code for it. The token is the only key: a wrong one is a 404, and the page shows nothing
of other orders."""
from __future__ import annotations

import contextlib

import aiohttp
import pytest

from tests.browser import chromium, decode_qr, keep_screenshot, wait_for
from tests.fake_lnd import FakeLndProcess
from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    yield from chromium(width=720, height=1100)


@pytest.fixture(scope="module")
def lnd(tmp_path_factory):  # noqa: ANN001, ANN201
    process = FakeLndProcess(tmp_path_factory.mktemp("fake-lnd-checkout"))
    process.start()
    yield process
    process.stop()


async def test_the_qr_is_the_unified_uri_and_the_page_turns_paid_live(node, lnd, tmp_path, browser) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1", KACCY_PUBLIC_URL="https://pay.example.com/",
                KACCY_LND_REST_URL=lnd.rest_url, KACCY_LND_MACAROON=lnd.info["macaroon"],
                KACCY_LND_TLS_CERT=lnd.info["tls_cert"])
    env = service_env(shop.env)
    key = api_key(env, "orders")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            api = Client(session, service.url, key)
            status, order = await api.request("POST", "/v1/orders", {"order_id": "co-1", "amount_sat": 125_000,
                                                                     "expires_in": 900,
                                                                     "lightning_msat": 125_000_000})
            assert status == 201, order
            token = order["checkout_url"].rsplit("/", 1)[1]
            assert order["checkout_url"] == f"https://pay.example.com/pay/{token}" and len(token) >= 32
            status, shown = await api.request("GET", "/v1/orders/co-1")
            assert shown["checkout_url"] == order["checkout_url"]
            status, invoice = await api.request("GET", "/v1/orders/co-1/invoice")
            assert invoice["payment_request"] == order["lightning"]["payment_request"]
            # The page needs no key; a token that opens nothing is a 404, a key does not help either.
            async with session.get(f"{service.url}/pay/{'x' * 32}") as response:
                assert response.status == 404
            async with session.get(f"{service.url}/pay/{token}") as response:
                page = await response.text()
                assert response.status == 200 and "text/html" in response.headers["Content-Type"]
            # Complete without JavaScript: amount, address, the QR code with its text alternative.
            assert "0.00125000 BTC" in page and order["address"] in page and "<svg" in page
            assert "QR code of the payment link" in page and 'name="viewport"' in page
            assert key not in page and "lightning_msat" not in page
            # The live feed needs no key either: the view now, of this order only.
            async with session.ws_connect(f"{service.url}/pay/{token}/ws", protocols=("kaccy.v1",)) as ws:
                first = await ws.receive_json(timeout=30)
                assert first["view"]["order_id"] == "co-1" and first["view"]["status"] == "waiting"
                assert first["view"]["payment_uri"] == f"{order['bip21']}&lightning=" \
                                                       f"{order['lightning']['payment_request']}"
                assert first["qr"].startswith("<svg") and set(first) == {"view", "qr"}
            async with session.get(f"{service.url}/pay/{'y' * 40}/ws") as response:
                assert response.status == 404

        uri = f"{order['bip21']}&lightning={order['lightning']['payment_request']}"
        browser.get(f"{service.url}/pay/{token}")
        assert await wait_for(browser, "document.body.dataset.live === 'yes'")
        shot = tmp_path / "checkout.png"
        browser.save_screenshot(str(shot))
        assert decode_qr(shot) == [uri]
        keep_screenshot(shot, "checkout.png")
        assert browser.find_element("id", "uri").get_attribute("value") == uri
        assert browser.find_element("id", "address").get_attribute("value") == order["address"]
        assert "1:" in browser.find_element("id", "left").text or "14:" in browser.find_element("id", "left").text
        assert browser.execute_script("return document.querySelector('#qr svg').getAttribute('role')") == "img"
        browser.execute_script("window.kaccyMarker = 7;")

        await node.send(order["address"], 125_000)
        assert await wait_for(browser, "document.body.dataset.status === 'seen'")
        await node.mine(1)
        assert await wait_for(browser, "document.body.dataset.status === 'paid'")
        assert browser.execute_script("return window.kaccyMarker;") == 7   # no reload
        assert "Paid" in browser.find_element("id", "status").text

        # Paid over Lightning instead: the settled invoice turns the page to paid as well.
        async with aiohttp.ClientSession() as session:
            status, other = await Client(session, service.url, key).request(
                "POST", "/v1/orders", {"order_id": "co-2", "amount_sat": 5_000, "lightning_msat": 5_000_000})
            assert status == 201, other
        browser.get(service.url + "/pay/" + other["checkout_url"].rsplit("/", 1)[1])   # KACCY_PUBLIC_URL is elsewhere
        assert await wait_for(browser, "document.body.dataset.live === 'yes'")
        assert browser.find_element("id", "bolt11").get_attribute("value") == other["lightning"]["payment_request"]
        await lnd.pay(other["lightning"]["payment_request"])
        assert await wait_for(browser, "document.body.dataset.status === 'paid'")
    finally:
        service.stop()


async def test_an_underpaid_order_shows_the_rest_due_and_its_qr(node, tmp_path, browser) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1")
    env = service_env(shop.env)
    order = shop.order("co-under", 50_000)
    assert order["checkout_url"].startswith("/pay/")      # no KACCY_PUBLIC_URL: the path alone
    assert shop.show("co-under")["checkout_url"] == order["checkout_url"]
    other = shop.order("co-other", 70_000)
    service = Service(env, tmp_path / "serve.log")
    try:
        browser.get(service.url + order["checkout_url"])
        assert await wait_for(browser, "document.body.dataset.live === 'yes'")
        assert other["address"] not in browser.page_source and "co-other" not in browser.page_source
        await node.send(order["address"], 20_000)
        await node.mine(1)
        assert await wait_for(browser, "document.body.dataset.status === 'underpaid'")
        assert await wait_for(browser, "document.getElementById('uri').value.endsWith('amount=0.0003')")
        assert browser.find_element("id", "amount-sat").text == "30000"
        shot = tmp_path / "underpaid.png"
        browser.save_screenshot(str(shot))
        assert decode_qr(shot) == [f"bitcoin:{order['address']}?amount=0.0003"]

        await node.send(order["address"], 30_000)
        await node.mine(1)
        assert await wait_for(browser, "document.body.dataset.status === 'paid'")

        # Behind a reverse proxy under a path (KACCY_PUBLIC_URL=https://host/shop): the page's
        # WebSocket is opened next to the page, under the same prefix.
        with prefix_proxy(service.url, "/shop") as front:
            browser.get(front + "/shop" + other["checkout_url"])
            assert await wait_for(browser, "document.body.dataset.live === 'yes'")
    finally:
        service.stop()


@contextlib.contextmanager
def prefix_proxy(upstream: str, prefix: str):  # noqa: ANN201
    """A reverse proxy on 127.0.0.1 serving `upstream` under `prefix` only (pages and WebSockets),
    on a loop of its own thread (Selenium's calls block the test's loop)."""
    import asyncio
    import threading

    from aiohttp import web

    upstreams: set = set()

    async def forward(request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        async with aiohttp.ClientSession() as session:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                theirs = await session.ws_connect(upstream + path, protocols=("kaccy.v1",))
                upstreams.add(theirs)
                ours = web.WebSocketResponse(protocols=("kaccy.v1",))
                await ours.prepare(request)
                async for message in theirs:
                    await ours.send_str(message.data)
                await ours.close()
                return ours
            async with session.get(upstream + path) as response:
                return web.Response(body=await response.read(), status=response.status,
                                    headers={k: v for k, v in response.headers.items()
                                             if k in ("Content-Type", "Content-Security-Policy")})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get(prefix + "/{tail:.*}", forward)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def stop() -> None:
        for theirs in list(upstreams):
            await theirs.close()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
