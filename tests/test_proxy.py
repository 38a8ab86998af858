"""KACCY_PROXY: every outgoing connection (the node's RPC, LND, webhook deliveries) goes through
the SOCKS5 proxy, with host names resolved by the proxy; KACCY_PROXY_EXCEPT hosts are reached
directly; a proxy that cannot be reached fails the call with `proxy_unreachable` and nothing is
connected to directly. The proxy is the test's own (tests/socks_proxy.py), on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from aiohttp import web

from kaccy_bitcoin.bootstrap import config
from kaccy_bitcoin.bootstrap.container import build
from kaccy_bitcoin.ports.webhooks import WebhookUnreachable
from tests.fake_lnd import FakeLndProcess, free_port
from tests.payments_harness import CLI, Shop
from tests.service_harness import until
from tests.socks_proxy import ATYP_DOMAIN, CountingListener, SocksProxy


@pytest.fixture
def proxy():
    server = SocksProxy()
    yield server
    server.close()


def by_name(url: str) -> str:
    """The URL with its 127.0.0.1 written as `localhost`: a name the proxy must resolve."""
    assert "127.0.0.1" in url
    return url.replace("127.0.0.1", "localhost")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_the_node_is_reached_through_the_proxy_by_name(node, tmp_path, proxy) -> None:  # noqa: ANN001
    rpc_url = by_name(node.node.url)
    shop = Shop(node, tmp_path, KACCY_BITCOIN_RPC_URL=rpc_url, KACCY_PROXY=proxy.url, KACCY_ZMQ="off")
    created = shop.order("via-proxy", 12_000)
    assert created["address"].startswith("bcrt1")
    to_node = [c for c in proxy.connects if c.port == port_of(rpc_url)]
    assert to_node and all((c.atyp, c.host) == (ATYP_DOMAIN, "localhost") for c in to_node)
    assert shop.poll() == []   # the monitor's calls too


def test_excepted_hosts_are_reached_directly(node, tmp_path, proxy) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, KACCY_BITCOIN_RPC_URL=by_name(node.node.url), KACCY_PROXY=proxy.url,
                KACCY_PROXY_EXCEPT="example.org, LOCALHOST", KACCY_ZMQ="off")
    shop.order("direct", 12_000)
    assert proxy.connects == []


def test_a_proxy_that_is_down_fails_the_call_and_nothing_goes_direct(node, tmp_path) -> None:  # noqa: ANN001
    target = CountingListener()   # where the node would be: must see no connection at all
    try:
        shop = Shop(node, tmp_path, KACCY_BITCOIN_RPC_URL=f"http://localhost:{target.port}",
                    KACCY_PROXY=f"socks5://127.0.0.1:{free_port()}", KACCY_ZMQ="off")
        status, out = shop.cli("order", "create", "no-proxy", "--amount-sat", "12000", check=False)
        assert status == 1 and out["error"]["code"] == "proxy_unreachable", out
        assert "127.0.0.1" in out["error"]["message"]
        status, out = shop.cli("monitor", "--once", check=False)
        assert status == 1 and "proxy_unreachable" in json.dumps(out), out
        assert target.accepted == 0
    finally:
        target.close()


def test_a_proxy_setting_that_cannot_work_is_refused(tmp_path) -> None:  # noqa: ANN001
    env = {**os.environ, "KACCY_DATA_DIR": str(tmp_path), "KACCY_PROXY": "http://127.0.0.1:8118"}
    proc = subprocess.run([CLI, "order", "show", "x"], env=env, capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout)
    assert proc.returncode == 2 and out["error"]["code"] == "config_error" and "socks5h" in out["error"]["message"]
    env = {**os.environ, "KACCY_DATA_DIR": str(tmp_path), "KACCY_PROXY_EXCEPT": "localhost"}
    proc = subprocess.run([CLI, "order", "show", "x"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "config_error"


def lnd_cli(fake: FakeLndProcess, tmp_path, *args: str, **env: str) -> tuple[int, dict]:  # noqa: ANN001
    environment = {**os.environ, "KACCY_NETWORK": "regtest", "KACCY_DATA_DIR": str(tmp_path),
                   "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/ln.db", "KACCY_LND_REST_URL": by_name(fake.rest_url),
                   "KACCY_LND_MACAROON": fake.info["macaroon"], "KACCY_LND_TLS_CERT": fake.info["tls_cert"], **env}
    proc = subprocess.run([CLI, *args], env=environment, capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.strip().splitlines()
    return proc.returncode, json.loads(line)


def test_lnd_is_reached_through_the_proxy_with_its_pinned_certificate(tmp_path, proxy) -> None:  # noqa: ANN001
    fake = FakeLndProcess(tmp_path / "lnd")
    fake.start()
    try:
        status, out = lnd_cli(fake, tmp_path, "ln", "channels", KACCY_PROXY=proxy.url)
        assert status == 0 and out["channels"], out
        assert proxy.connects and {(c.atyp, c.host, c.port) for c in proxy.connects} == {
            (ATYP_DOMAIN, "localhost", fake.port)}
        status, out = lnd_cli(fake, tmp_path, "ln", "channels", KACCY_PROXY=f"socks5h://127.0.0.1:{free_port()}")
        assert status == 1 and out["error"]["code"] == "proxy_unreachable", out
    finally:
        fake.stop()


async def test_webhook_deliveries_go_through_the_proxy(tmp_path, proxy) -> None:  # noqa: ANN001
    got: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = {"KACCY_DATA_DIR": str(tmp_path), "KACCY_WEBHOOK_ALLOW_PRIVATE": "true"}
    try:
        for env, through_proxy in (({**base, "KACCY_PROXY": proxy.url}, True),
                                   ({**base, "KACCY_PROXY": proxy.url, "KACCY_PROXY_EXCEPT": "localhost"}, False)):
            container = build(config.load(env))
            transport = await container.gateways.webhook_transport()
            before = len(proxy.connects)
            assert await transport.post(f"http://localhost:{port}/hook", b'{"n": 1}', {}) == 204
            seen = proxy.connects[before:]
            assert [(c.atyp, c.host, c.port) for c in seen] == ([(ATYP_DOMAIN, "localhost", port)]
                                                                if through_proxy else [])
            await container.shutdown_resources()
        assert got == [b'{"n": 1}'] * 2

        container = build(config.load({**base, "KACCY_PROXY": f"socks5h://127.0.0.1:{free_port()}"}))
        transport = await container.gateways.webhook_transport()
        with pytest.raises(WebhookUnreachable, match="proxy_unreachable"):
            await transport.post(f"http://localhost:{port}/hook", b"{}", {})
        await container.shutdown_resources()
        assert len(got) == 2
    finally:
        await runner.cleanup()


async def test_without_allow_private_a_localhost_webhook_is_refused_even_through_the_proxy(tmp_path, proxy) -> None:  # noqa: ANN001,E501
    container = build(config.load({"KACCY_DATA_DIR": str(tmp_path), "KACCY_PROXY": proxy.url}))
    transport = await container.gateways.webhook_transport()
    try:
        assert await transport.addresses("localhost") == ["127.0.0.1"]
        assert await transport.addresses("example.org") == []   # not looked up here: the proxy resolves it
        with pytest.raises(WebhookUnreachable, match="loopback"):
            await transport.post("http://localhost:1/hook", b"{}", {})
        assert proxy.connects == []
    finally:
        await container.shutdown_resources()


async def test_zmq_notifications_go_through_the_proxy(node, tmp_path, proxy) -> None:  # noqa: ANN001
    zmq_port = port_of(node.node.zmq_url)
    env = {**node.env(KACCY_DATA_DIR=str(tmp_path), KACCY_BITCOIN_RPC_URL=by_name(node.node.url)),
           "KACCY_PROXY": proxy.url}
    container = build(config.load(env))
    try:
        notifications = await container.gateways.chain_notifications()
        assert notifications.sources

        async def connected() -> bool:
            return (1, "127.0.0.1", zmq_port) in {(c.atyp, c.host, c.port) for c in proxy.connects}

        await until(connected, 30, 0.02)
        for _ in range(3):   # a SUB connection may still be finishing its handshake for the first block
            await node.mine(1)
            if await notifications.wait(10):
                break
        else:
            raise AssertionError("no ZMQ notification came through the proxy")
    finally:
        await container.shutdown_resources()


def test_every_outgoing_session_comes_from_the_one_factory() -> None:
    """No module but adapters/net/http.py makes an aiohttp session or connector, or opens a
    connection of its own: what connects out goes through `HttpClients`, so KACCY_PROXY holds for
    every one (the regtest launcher's probe of its own 127.0.0.1 port aside)."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    making = {"ClientSession", "TCPConnector", "ProxyConnector", "ChainProxyConnector", "open_connection",
              "create_connection", "urlopen", "HTTPConnection", "HTTPSConnection"}
    allowed = {root / "adapters" / "net" / "http.py"}
    found = []
    for folder in ("domain", "ports", "adapters", "application", "bootstrap", "package"):
        for path in (root / folder).rglob("*.py"):
            if path in allowed or "fake" in path.relative_to(root).parts:
                continue
            for n in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(n, ast.Call):
                    name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                    if name in making or (name == "request" and "aiohttp" in ast.unparse(n.func)):
                        found.append(f"{path.relative_to(root)}:{n.lineno} {ast.unparse(n.func)}")
    assert found == [], "outgoing connections made outside adapters/net/http.py: " + ", ".join(found)


@pytest.mark.parametrize("broken", ["resets", "speaks HTTP"])
async def test_a_proxy_that_is_not_a_socks5_proxy_is_proxy_unreachable(broken: str) -> None:
    from kaccy_bitcoin.adapters.net.errors import ProxyUnreachable
    from kaccy_bitcoin.adapters.net.http import HttpClients
    from kaccy_bitcoin.adapters.net.proxy import ProxySettings

    listener, runner = CountingListener(), None
    try:
        port = listener.port
        if broken == "speaks HTTP":
            runner = web.AppRunner(web.Application())
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        clients = HttpClients(ProxySettings.parse(f"socks5h://127.0.0.1:{port}"))
        async with clients.session() as session:
            with pytest.raises(ProxyUnreachable):
                await session.get("http://localhost:1/")
    finally:
        listener.close()
        if runner is not None:
            await runner.cleanup()


async def test_serve_detects_a_payment_and_delivers_its_webhook_all_through_the_proxy(node, tmp_path, proxy) -> None:  # noqa: ANN001,E501
    import aiohttp

    from tests.service_harness import Client, Service, api_key, service_env

    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    shop = Shop(node, tmp_path, KACCY_BITCOIN_RPC_URL=by_name(node.node.url), KACCY_PROXY=proxy.url)
    env = service_env(shop.env, KACCY_WEBHOOK_ALLOW_PRIVATE="true")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            admin = Client(session, service.url, api_key(env, "admin"))
            status, _ = await admin.post("/v1/webhooks", {"url": f"http://localhost:{hook_port}/hook"})
            assert status == 201
            await node.send(shop.order("served", 15_000)["address"], 15_000)

            async def delivered() -> bool:
                return any(e["kind"] == "payment_detected" for e in got)

            await until(delivered, 60)
        seen = {(c.atyp, c.host, c.port) for c in proxy.connects}
        assert (ATYP_DOMAIN, "localhost", hook_port) in seen
        assert (ATYP_DOMAIN, "localhost", port_of(node.node.url)) in seen
        assert all(c.port in (hook_port, port_of(node.node.url), port_of(node.node.zmq_url)) for c in proxy.connects)
    finally:
        service.stop()
        await runner.cleanup()


async def test_the_proxy_url_s_user_and_password_are_given_to_the_proxy() -> None:
    from kaccy_bitcoin.adapters.net.errors import ProxyUnreachable
    from kaccy_bitcoin.adapters.net.http import HttpClients
    from kaccy_bitcoin.adapters.net.proxy import ProxySettings

    proxy = SocksProxy(credentials=("kaccy", "p@ss"))
    runner = web.AppRunner(web.Application())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        clients = HttpClients(ProxySettings.parse(f"socks5h://kaccy:p%40ss@127.0.0.1:{proxy.port}"))
        async with clients.session() as session:
            async with session.get(f"http://localhost:{port}/") as answer:
                assert answer.status == 404   # the empty app answered, through the proxy
        assert proxy.logins == [("kaccy", "p@ss")] and [(c.atyp, c.host, c.port) for c in proxy.connects] == [(ATYP_DOMAIN, "localhost", port)]
        wrong = HttpClients(ProxySettings.parse(f"socks5h://kaccy:nope@127.0.0.1:{proxy.port}"))
        async with wrong.session() as session:
            with pytest.raises(ProxyUnreachable):   # the proxy refused us: nothing went anywhere
                await session.get(f"http://localhost:{port}/")
        assert len(proxy.connects) == 1
    finally:
        proxy.close()
        await runner.cleanup()


async def test_a_host_the_proxy_cannot_reach_is_that_host_s_failure_not_the_proxy_s(proxy) -> None:  # noqa: ANN001
    import aiohttp

    from kaccy_bitcoin.adapters.net.http import HttpClients
    from kaccy_bitcoin.adapters.net.proxy import ProxySettings

    clients = HttpClients(ProxySettings.parse(proxy.url))
    async with clients.session() as session:
        with pytest.raises(aiohttp.ClientConnectorError, match="through the proxy"):
            await session.get(f"http://localhost:{free_port()}/")   # nothing listens there
        with pytest.raises(aiohttp.ClientConnectorError, match="through the proxy"):
            await session.get("http://example.org/")                # the test's proxy relays to 127.0.0.1 only
    assert [c.host for c in proxy.connects] == ["localhost", "example.org"]
