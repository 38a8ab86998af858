"""The HTTP API of `kaccy-bitcoin serve`, run as its own process against the regtest node and
driven over HTTP: every route, auth and scopes, validation, idempotency keys, rate limits,
the event WebSocket, health, readiness, metrics and correlation ids in the logs."""
from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env, until

pytestmark = pytest.mark.node


@pytest.fixture
async def served(node, tmp_path):  # noqa: ANN001, ANN201
    shop = Shop(node, tmp_path)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    env = service_env(shop.env, KACCY_LOG_LEVEL="debug")   # RPC calls are logged at debug
    keys = {"read": api_key(env, "read"), "orders": api_key(env, "orders"),
            "withdraw": api_key(env, "withdraw"), "admin": api_key(env, "admin")}
    service = Service(env, tmp_path / "serve.log")
    async with aiohttp.ClientSession() as session:
        clients = {name: Client(session, service.url, key) for name, key in keys.items()}
        clients["anonymous"] = Client(session, service.url, None)
        yield shop, service, clients
    service.stop()


async def test_orders_events_and_the_websocket_match_the_cli(node, served) -> None:  # noqa: ANN001
    shop, service, c = served
    status, created = await c["orders"].post("/v1/orders", {"order_id": "o-1", "amount_sat": 70_000,
                                                            "label": "coffee"}, headers={"Idempotency-Key": "k1"})
    assert status == 201, created
    assert set(created) == {"order_id", "address", "amount_sat", "bip21", "checkout_url"}
    assert created["checkout_url"].startswith("/pay/")
    assert created == shop.order("o-1", 70_000, "--label", "coffee")   # the CLI agrees (same order again)
    status, shown = await c["read"].get("/v1/orders/o-1")
    assert status == 200 and shown == shop.show("o-1") and shown["status"] == "pending"

    async with c["read"].session.ws_connect(service.url + "/v1/events/ws?after=0",
                                            headers=c["read"].headers()) as ws:
        await node.send(created["address"], 70_000)

        async def paid() -> dict | None:
            s, view = await c["read"].get("/v1/orders/o-1")
            return view if view["status"] == "unconfirmed" else None

        await until(paid)
        message = await asyncio.wait_for(ws.receive(), 30)
        assert message.type == aiohttp.WSMsgType.TEXT
        streamed = json.loads(message.data)
        assert streamed["kind"] == "payment_detected" and streamed["subject"] == "o-1" and streamed["seq"] >= 1

    status, page = await c["read"].get("/v1/events?after=0&limit=10")
    assert status == 200 and page == shop.cli("events", "--after", "0", "--limit", "10")[1]
    assert page["events"][0] == streamed
    status, empty = await c["read"].get(f"/v1/events?after={page['next']}")
    assert status == 200 and empty == {"events": [], "next": page["next"]}
    for bad in ("after=-1", "after=x", "limit=0", "limit=1001"):
        status, error = await c["read"].get(f"/v1/events?{bad}")
        assert status == 400 and error["error"]["code"] == "invalid_event_request", bad


async def test_orders_list_filters_and_pages(served) -> None:  # noqa: ANN001
    shop, service, c = served
    for n in range(5):
        s, _ = await c["orders"].post("/v1/orders", {"order_id": f"l-{n}", "amount_sat": 1000 + n,
                                                     "label": "even" if n % 2 == 0 else "odd"})
        assert s == 201
    s, first = await c["read"].get("/v1/orders?limit=2")
    assert s == 200 and [o["order_id"] for o in first["orders"]] == ["l-0", "l-1"] and first["next"] == "l-1"
    s, second = await c["read"].get(f"/v1/orders?limit=2&after={first['next']}")
    assert [o["order_id"] for o in second["orders"]] == ["l-2", "l-3"]
    s, last = await c["read"].get("/v1/orders?limit=2&after=l-3")
    assert [o["order_id"] for o in last["orders"]] == ["l-4"] and last["next"] is None
    s, even = await c["read"].get("/v1/orders?label=even&status=pending")
    assert [o["order_id"] for o in even["orders"]] == ["l-0", "l-2", "l-4"]
    assert even["orders"][0] == shop.show("l-0")
    s, none = await c["read"].get("/v1/orders?status=finalized")
    assert s == 200 and none == {"orders": [], "next": None}
    s, error = await c["read"].get("/v1/orders?status=paid")
    assert s == 400 and error["error"]["code"] == "invalid_order"
    s, error = await c["read"].get("/v1/orders?limit=501")
    assert s == 400 and error["error"]["code"] == "invalid_request"


async def test_keys_and_scopes(served) -> None:  # noqa: ANN001
    shop, service, c = served
    order = {"order_id": "a-1", "amount_sat": 5000}
    s, e = await c["anonymous"].post("/v1/orders", order)
    assert s == 401 and e["error"]["code"] == "unauthorized"
    wrong = Client(c["read"].session, service.url, "kaccy_not-a-key")
    s, e = await wrong.get("/v1/orders/a-1")
    assert s == 401 and e["error"]["code"] == "unauthorized"
    s, e = await c["read"].post("/v1/orders", order)
    assert s == 403 and e["error"]["code"] == "forbidden"
    s, e = await c["orders"].get("/v1/events")
    assert s == 403
    s, e = await c["read"].post("/v1/webhooks", {"url": "http://127.0.0.1:9/x"})
    assert s == 403
    s, e = await c["orders"].post("/v1/withdrawals", {"outputs": []}, headers={"Idempotency-Key": "w"})
    assert s == 403
    s, _ = await c["admin"].post("/v1/orders", order)          # admin may do everything
    assert s == 201
    s, e = await c["read"].get("/v1/orders/nope")
    assert s == 404 and e["error"]["code"] == "not_found"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:   # no key: refused before the upgrade
        await c["read"].session.ws_connect(service.url + "/v1/events/ws")
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await c["read"].session.ws_connect(service.url + "/v1/events/ws", headers=c["orders"].headers())
    assert refused.value.status == 403


async def test_validation_and_limits(served) -> None:  # noqa: ANN001
    shop, service, c = served
    o = c["orders"]
    cases = [
        ({"order_id": "v", "amount_sat": -5}, "invalid_request", "amount_sat"),
        ({"order_id": "v", "amount_sat": "5"}, "invalid_request", "amount_sat"),
        ({"order_id": "v", "amount_sat": 1.5}, "invalid_request", "amount_sat"),
        ({"order_id": "v", "amount_sat": True}, "invalid_request", "amount_sat"),
        ({"amount_sat": 5}, "invalid_request", "order_id"),
        ({"order_id": "", "amount_sat": 5}, "invalid_request", "order_id"),
        ({"order_id": "x" * 129, "amount_sat": 5}, "invalid_request", "order_id"),
        ({"order_id": "v", "amount_sat": 5, "expires_in": 0}, "invalid_request", "expires_in"),
        ({"order_id": "v", "amount_sat": 5, "colour": "red"}, "invalid_request", "colour"),
    ]
    for body, code, word in cases:
        s, e = await o.post("/v1/orders", body)
        assert s == 400 and e["error"]["code"] == code and word in e["error"]["message"], (body, e)
    s, e = await o.post("/v1/orders", raw=b"{not json")
    assert s == 400 and e["error"]["code"] == "invalid_json"
    s, e = await o.post("/v1/orders", raw=b"[1, 2]")
    assert s == 400 and e["error"]["code"] == "invalid_json"
    s, e = await o.post("/v1/orders", raw=b'{"order_id": "big", "label": "' + b"x" * 70_000 + b'"}')
    assert s == 413 and e["error"]["code"] == "request_too_large"
    s, e = await o.get("/v1/nowhere")
    assert s == 404 and e["error"]["code"] == "not_found"
    s, e = await o.request("PUT", "/v1/orders")
    assert s == 405 and e["error"]["code"] == "method_not_allowed"
    shop.order("taken", 1000)
    s, e = await o.post("/v1/orders", {"order_id": "taken", "amount_sat": 2000})
    assert s == 409 and e["error"]["code"] == shop.cli("order", "create", "taken", "--amount-sat", "2000",
                                                        check=False)[1]["error"]["code"]


async def test_idempotency_keys(served) -> None:  # noqa: ANN001
    shop, service, c = served
    o = c["orders"]
    body = {"order_id": "i-1", "amount_sat": 12_345}
    s1, first = await o.post("/v1/orders", body, headers={"Idempotency-Key": "same"})
    s2, again = await o.post("/v1/orders", body, headers={"Idempotency-Key": "same"})
    assert (s1, s2) == (201, 201) and first == again and o.last.headers.get("Idempotent-Replayed") == "true"
    s, e = await o.post("/v1/orders", {**body, "amount_sat": 1}, headers={"Idempotency-Key": "same"})
    assert s == 422 and e["error"]["code"] == "idempotency_key_reused"
    s, e = await o.post("/v1/orders", {"order_id": "i-2", "amount_sat": -1}, headers={"Idempotency-Key": "bad"})
    s2, e2 = await o.post("/v1/orders", {"order_id": "i-2", "amount_sat": -1}, headers={"Idempotency-Key": "bad"})
    assert s == s2 == 400 and e == e2
    # Another key's Idempotency-Key space is its own.
    s, other = await c["admin"].post("/v1/orders", {"order_id": "i-3", "amount_sat": 1}, headers={"Idempotency-Key": "same"})
    assert s == 201 and other["order_id"] == "i-3"
    w = c["withdraw"]
    s, e = await w.post("/v1/withdrawals", {"outputs": [{"address": "x", "amount_sat": 1}]})
    assert s == 400 and e["error"]["code"] == "idempotency_key_required"
    s, e = await w.post("/v1/withdrawals", {"outputs": []}, headers={"Idempotency-Key": "x" * 201})
    assert s == 400 and e["error"]["code"] == "invalid_idempotency_key"


async def test_health_ready_metrics_openapi_need_no_key(node, served) -> None:  # noqa: ANN001
    shop, service, c = served
    a = c["anonymous"]
    s, health = await a.get("/health")
    assert s == 200 and health == {"status": "ok"}

    last: list = []

    async def ready() -> dict | None:
        status, report = await a.get("/ready")
        last[:] = [report]
        return report if status == 200 else None

    try:
        report = await until(ready)
    except AssertionError:
        raise AssertionError(f"not ready: {last}") from None
    assert set(report["checks"]) == {"bitcoind", "database", "monitor"}
    for check in report["checks"].values():
        assert check["status"] == "ok" and check["latency_ms"] >= 0
    assert report["checks"]["bitcoind"]["synced"] is True and report["checks"]["monitor"]["lag_blocks"] == 0
    await c["orders"].post("/v1/orders", {"order_id": "m-1", "amount_sat": 1000})
    s, text = await a.get("/metrics")
    assert s == 200 and a.last.headers["Content-Type"].startswith("text/plain")
    for name in ('kaccy_payments{status="pending"}', "kaccy_received_sat", "kaccy_rpc_seconds_bucket",
                 "kaccy_monitor_lag_blocks", "kaccy_monitor_polls_total", 'kaccy_http_requests_total{route="/v1/orders"',
                 'kaccy_webhook_deliveries_total{result="failed"} 0.0', "kaccy_outbox_last_seq"):
        assert name in text, name
    s, doc = await a.get("/openapi.json")
    assert s == 200 and doc["openapi"].startswith("3.") and "/v1/orders" in doc["paths"]


async def test_correlation_id_follows_the_request_into_rpc_calls(served) -> None:  # noqa: ANN001
    shop, service, c = served
    # Other processes handed out addresses past the range serve had the node watch before it
    # listened: this request's order then makes the node widen it, under the request's id.
    store = shop.container().storage.uow()
    with store() as uow:
        for _ in range(5_000):
            uow.addresses.allocate(0)
        uow.commit()
    store.engine.dispose()
    s, _ = await c["orders"].post("/v1/orders", {"order_id": "c-1", "amount_sat": 1000},
                                  headers={"X-Request-Id": "req-abc-123"})
    assert s == 201 and c["orders"].last.headers["X-Request-Id"] == "req-abc-123"

    async def logged() -> list | None:
        mine = [e for e in service.logs() if e.get("correlation_id") == "req-abc-123"]
        return mine if any(e["logger"] == "kaccy_bitcoin.http" for e in mine) else None

    mine = await until(logged, 10)
    assert any(e["logger"] == "kaccy_bitcoin.rpc" and e["rpc_method"] for e in mine), mine
    assert any(e.get("path") == "/v1/orders" and e.get("status") == 201 for e in mine)


async def test_rate_limit_per_key(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env, KACCY_API_RATE_LIMIT="1", KACCY_API_RATE_BURST="3")
    busy, calm = api_key(env, "read"), api_key(env, "read")
    service = Service(env, tmp_path / "serve.log", "--no-monitor", "--no-webhooks")
    try:
        async with aiohttp.ClientSession() as session:
            b, c = Client(session, service.url, busy), Client(session, service.url, calm)
            statuses = [(await b.get("/v1/events"))[0] for _ in range(6)]
            assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429, 429]
            s, e = await b.get("/v1/events")
            assert s == 429 and e["error"]["code"] == "rate_limited" and int(b.last.headers["Retry-After"]) >= 1
            assert (await c.get("/v1/events"))[0] == 200          # another key has its own budget
            assert (await b.get("/health"))[0] == 200             # no key, no limit
            await asyncio.sleep(1.1)
            assert (await b.get("/v1/events"))[0] == 200
    finally:
        assert service.stop() == 0


def test_apikey_create_refuses_unknown_scopes(tmp_path) -> None:  # noqa: ANN001
    import subprocess

    from tests.payments_harness import CLI

    env = {**os.environ, "KACCY_DATA_DIR": str(tmp_path), "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/k.db"}
    for args in (["apikey", "create"], ["apikey", "create", "--scope", "root"]):
        proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "usage", proc.stdout
    proc = subprocess.run([CLI, "apikey", "create", "--scope", "read", "--scope", "read"], env=env,
                          capture_output=True, text=True, timeout=60)
    created = json.loads(proc.stdout)
    assert created["scopes"] == ["read"] and created["key"].startswith("kaccy_") and len(created["key"]) > 40
    import sqlite3

    stored = sqlite3.connect(f"{tmp_path}/k.db").execute("SELECT key_hash FROM kaccy_api_keys").fetchall()
    assert created["key"] not in str(stored) and len(stored[0][0]) == 64


async def test_several_api_workers_share_the_port_and_stop_together(node, tmp_path) -> None:  # noqa: ANN001
    import subprocess

    shop = Shop(node, tmp_path)
    env = service_env(shop.env)
    key = api_key(env, "orders")
    service = Service(env, tmp_path / "serve.log", "--workers", "2")
    try:
        children = subprocess.run(["pgrep", "-P", str(service.proc.pid)], capture_output=True, text=True)
        assert len(children.stdout.split()) == 1
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            c = Client(session, service.url, key)
            answers = [await c.post("/v1/orders", {"order_id": f"wk-{n}", "amount_sat": 1000 + n}) for n in range(20)]
            assert [s for s, _ in answers] == [201] * 20
            assert len({a["address"] for _, a in answers}) == 20                # one address book
            pids = {e["pid"] for e in service.logs() if e.get("path") == "/v1/orders" and "pid" in e}
    finally:
        assert service.stop() == 0
    assert subprocess.run(["pgrep", "-P", str(service.proc.pid)], capture_output=True).returncode == 1
    assert len(pids) == 2, "both processes answered"


async def test_a_revoked_key_is_refused_within_ten_seconds(served) -> None:  # noqa: ANN001
    import subprocess

    from tests.payments_harness import CLI

    shop, service, c = served
    assert (await c["read"].get("/v1/events"))[0] == 200

    def cli(*args: str) -> dict:
        proc = subprocess.run([CLI, "apikey", *args], env=service.env, capture_output=True, text=True, timeout=60)
        return json.loads(proc.stdout)

    listed = cli("list")["keys"]
    assert len(listed) == 4 and all("key" not in k and not k["revoked"] for k in listed)
    read_id = next(k["key_id"] for k in listed if k["scopes"] == ["read"])
    assert cli("revoke", read_id) == {"key_id": read_id, "revoked": True}
    assert cli("revoke", "key_nope")["error"]["code"] == "not_found"

    async def refused() -> bool:
        return (await c["read"].get("/v1/events"))[0] == 401

    await until(refused, 15, 0.5)
    assert (await c["admin"].get("/v1/events"))[0] == 200


def test_serve_without_a_node_refuses_to_start(tmp_path) -> None:  # noqa: ANN001
    import subprocess

    from tests.payments_harness import CLI

    env = {k: v for k, v in os.environ.items() if not k.startswith("KACCY_")}
    env.update({"KACCY_DATA_DIR": str(tmp_path), "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/k.db"})
    proc = subprocess.run([CLI, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and json.loads(proc.stdout.splitlines()[-1])["error"]["code"] == "config_error"
    for bad in (["--port", "70000"], ["--workers", "0"], ["--interval", "0"]):
        proc = subprocess.run([CLI, "serve", *bad], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "usage", bad
