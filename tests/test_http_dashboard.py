"""The operator's dashboard in a real browser: headless Chromium (Debian's `chromium` and
`chromedriver`, installed by scripts/setup.sh) driven by Selenium against a running `serve` on
regtest. An order paid on chain shows up as finalized on the page without a reload, pushed over
the WebSocket; a withdrawal held by the risk review is listed with its reasons."""
from __future__ import annotations

import asyncio
import shutil
import time

import aiohttp
import pytest

from tests.payments_harness import Shop
from tests.service_harness import Service, api_key, service_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():  # noqa: ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "headless Chromium is missing: scripts/setup.sh installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


async def wait_for(driver, script: str, timeout: float = 60.0):  # noqa: ANN001, ANN201
    """Poll a JavaScript expression in the page until it is truthy (the event loop keeps running)."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        await asyncio.sleep(0.2)


async def test_a_paid_order_turns_finalized_on_the_page_without_a_reload(node, tmp_path, browser) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1")
    env = service_env(shop.env)
    admin = api_key(env, "admin")
    order = shop.order("dash-1", 40_000)
    service = Service(env, tmp_path / "serve.log")
    try:
        browser.get(f"{service.url}/dashboard#key={admin}")
        await wait_for(browser, "document.getElementById('order-dash-1') !== null")
        assert await wait_for(browser, "document.getElementById('order-dash-1').dataset.status === 'pending'")
        assert await wait_for(browser, "document.getElementById('live').textContent === '(live)'")
        # The key left the address bar; the page is marked to tell a reload apart.
        assert "#key=" not in browser.current_url
        browser.execute_script("window.kaccyMarker = 42;")
        health = await wait_for(browser, "document.querySelectorAll('#health tbody tr').length")
        assert health >= 2

        await node.send(order["address"], 40_000)
        await node.mine(1)
        assert await wait_for(browser, "document.getElementById('order-dash-1').dataset.status === 'finalized'")
        assert browser.execute_script("return window.kaccyMarker;") == 42   # no reload happened
        row = browser.execute_script("return document.getElementById('order-dash-1').innerText;")
        assert "40000" in row and "exact" in row

        # A withdrawal to one of our own deposit addresses is held for review: listed with its reasons.
        await node.send(shop.order("dash-2", 10_000)["address"], 300_000)
        await node.mine(1)
        ours = shop.order("dash-3", 5_000)["address"]
        shop.env.update({"KACCY_SIGNER_MNEMONIC": shop.words})
        held = shop.cli("withdraw", "create", "--to", ours, "--amount-sat", "20000")[1]
        assert held["state"] == "held"
        browser.refresh()
        reasons = await wait_for(browser, "document.querySelector('#held tbody tr') && "
                                          "document.querySelector('#held tbody tr').innerText")
        assert held["withdrawal_id"] in reasons and "own_deposit_address" in reasons
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            async with session.get(f"{service.url}/v1/withdrawals?state=held") as response:
                listed = await response.json()
                assert response.status == 200
            assert [w["withdrawal_id"] for w in listed["withdrawals"]] == [held["withdrawal_id"]]
            assert listed["withdrawals"][0]["risk"] == held["risk"]
            async with session.get(f"{service.url}/v1/withdrawals?state=nonsense") as response:
                assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_request"
        alerts = await wait_for(browser, "document.querySelector('#alerts tbody').innerText")
        assert "order_overpaid" in alerts or "withdrawal_held" in alerts
    finally:
        service.stop()


async def test_the_page_asks_for_a_key_and_refuses_a_wrong_one(node, tmp_path, browser) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env)
    service = Service(env, tmp_path / "serve.log")
    try:
        browser.get(f"{service.url}/dashboard")
        assert await wait_for(browser, "!document.getElementById('login').hidden")
        browser.find_element("id", "key").send_keys("kb_not_a_key")
        browser.find_element("css selector", "#login button").click()
        message = await wait_for(browser, "!document.getElementById('error').hidden && "
                                          "document.getElementById('error').textContent")
        assert "not valid" in message
    finally:
        service.stop()
