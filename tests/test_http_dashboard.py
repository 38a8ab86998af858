"""The operator's dashboard in a real browser: headless Chromium (Debian's `chromium` and
`chromedriver`, installed by scripts/setup.sh; reaching 127.0.0.1 only, tests/browser.py) driven by
Selenium against a running `serve` on regtest. An order paid on chain shows up as finalized on the
page without a reload, pushed over the WebSocket, and the balances and the 30-day chart follow with
the API's numbers; a withdrawal held by the risk review is listed with its reasons and its Cancel
button cancels it through the API."""
from __future__ import annotations

import aiohttp
import pytest

from tests.browser import chromium, keep_screenshot, wait_for
from tests.payments_harness import Shop
from tests.service_harness import Service, api_key, service_env

@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    yield from chromium(width=1280, height=1000)


async def test_a_paid_order_turns_finalized_on_the_page_without_a_reload(node, tmp_path, browser) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1", KACCY_CUSTODY_TIERS="hot=default",
                KACCY_CUSTODY_TARGETS="hot=100")
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

        # The balances and the chart: the same numbers as the API's, updated without a reload.
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            async with session.get(f"{service.url}/v1/stats/daily") as response:
                flows = await response.json()
            async with session.get(f"{service.url}/v1/wallets") as response:
                wallets = (await response.json())["wallets"]
            async with session.get(f"{service.url}/v1/stats") as response:
                stats = await response.json()
            async with session.get(f"{service.url}/v1/custody") as response:
                (tier,) = (await response.json())["tiers"]
            async with session.get(f"{service.url}/v1/stats/daily.svg") as response:
                assert response.status == 200 and response.content_type == "image/svg+xml"
                assert 'data-in-sat="40000"' in await response.text()
        assert (stats["volume_in_sat"], stats["deposits_confirmed"]) == (40_000, 1)
        assert flows["in_sat"] == 40_000 and flows["days"][-1]["in_sat"] == 40_000 and len(flows["days"]) == 30
        assert await wait_for(browser, "document.querySelector('#chart svg') && "
                                       "document.querySelector('#chart svg').dataset.inSat === '40000'")
        bars = browser.execute_script("return [...document.querySelectorAll('#chart g.day')].map("
                                      "g => [g.dataset.day, Number(g.dataset.inSat), Number(g.dataset.outSat)]);")
        assert bars == [[d["day"], d["in_sat"], d["out_sat"]] for d in flows["days"]]
        assert browser.find_element("id", "flow-in").text == "40000"
        assert browser.find_element("id", "stat-in").text == str(stats["volume_in_sat"])
        (default,) = [w for w in wallets if w["wallet"] == "default"]
        assert default["confirmed_sat"] == 40_000
        assert await wait_for(browser, "document.getElementById('wallet-default') && "
                                       "document.getElementById('wallet-default').dataset.confirmedSat === '40000'")
        assert (tier["tier"], tier["balance_sat"], tier["target_sat"]) == ("hot", 40_000, 40_000)
        assert await wait_for(browser, "document.getElementById('tier-hot') && "
                                       "document.getElementById('tier-hot').dataset.balanceSat === '40000'")
        count = await node.call("getblockcount")
        assert await wait_for(browser, f"document.getElementById('node-height').textContent === '{count}'")
        assert browser.find_element("id", "node-synced").text == "yes"

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
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        keep_screenshot(shot, "dashboard.png")
        # Its Cancel button calls the API: the withdrawal is cancelled, the list empties.
        browser.find_element("css selector", "#held button[data-action='cancel']").click()
        assert await wait_for(browser, "document.querySelectorAll('#held tbody tr').length === 0")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            async with session.get(f"{service.url}/v1/withdrawals/{held['withdrawal_id']}") as response:
                assert (await response.json())["state"] == "rejected"   # a held one cancelled: rejected
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


async def test_channels_are_shown_with_their_balances_and_closed_from_the_page(node, tmp_path, browser) -> None:  # noqa: ANN001
    from tests.fake_lnd import FakeLndProcess

    lnd = FakeLndProcess(tmp_path / "lnd")
    (tmp_path / "lnd").mkdir()
    lnd.start()
    shop = Shop(node, tmp_path, KACCY_LND_REST_URL=lnd.rest_url, KACCY_LND_MACAROON=lnd.info["macaroon"],
                KACCY_LND_TLS_CERT=lnd.info["tls_cert"])
    env = service_env(shop.env)
    admin = api_key(env, "admin")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            async with session.get(f"{service.url}/v1/lightning/channels") as response:
                (channel,) = (await response.json())["channels"]
        browser.get(f"{service.url}/dashboard#key={admin}")
        point = channel["channel_point"]
        row = f"document.querySelector('#channels tr[data-channel-point=\"{point}\"]')"
        assert await wait_for(browser, f"{row} && {row}.dataset.state === 'active'")
        cells = browser.execute_script(f"return [...{row}.cells].map(c => c.textContent);")
        assert cells[4:6] == [str(channel["local_balance_sat"]), str(channel["remote_balance_sat"])]
        widths = browser.execute_script(f"return [...{row}.querySelectorAll('.bar span')].map(s => s.style.width);")
        assert widths == ["50%", "50%"]
        browser.find_element("css selector", f"#channels tr[data-channel-point='{point}'] button[data-action='close']") \
            .click()
        assert await wait_for(browser, f"{row} && {row}.dataset.state === 'closing'")

        # The form opens one: pending until its funding confirms.
        import coincurve

        peer = coincurve.PrivateKey().public_key.format().hex()
        form = browser.find_element("id", "open-channel")
        form.find_element("name", "node").send_keys(f"{peer}@127.0.0.1:9735")
        form.find_element("name", "local_sat").send_keys("150000")
        form.find_element("css selector", "button[type=submit]").click()
        assert await wait_for(browser, "[...document.querySelectorAll('#channels tr')].some("
                                       "r => r.dataset.state === 'pending_open' && r.cells[2].textContent === '150000')")
    finally:
        service.stop()
        lnd.stop()
