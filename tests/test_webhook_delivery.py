"""Webhook delivery from the outbox, in-process with a scripted receiver and a manual clock:
order, filters, backoff, redelivery, and a slow receiver holding up only its own webhook."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Mapping

import pytest

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.sql.service_store import SqlServiceStore
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory
from kaccy_bitcoin.application.api_access import RedeliverWebhook, RegisterWebhook
from kaccy_bitcoin.application.webhooks import DeliverWebhooks, DeliverySettings, run_deliveries
from kaccy_bitcoin.domain.api_access import verify_signature
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.ports.webhooks import WebhookTransport, WebhookUnreachable
from tests.conftest import STORAGE_KINDS, fresh_engine

SQL_KINDS = [k for k in STORAGE_KINDS if k != "memory"]
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


class Receivers(WebhookTransport):
    """Answers by URL: a list of statuses to give in turn (then 200); None = no answer. Its hosts
    resolve to `dns` (a public address by default, never connected to)."""

    def __init__(self) -> None:
        self.dns: dict[str, list[str]] = {}
        self.script: dict[str, list[int | None]] = {}
        self.got: dict[str, list[dict]] = {}
        self.slow: set[str] = set()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if url in self.slow:
            await asyncio.sleep(3600)
        answers = self.script.get(url) or []
        status = answers.pop(0) if answers else 200
        if status is None:
            raise WebhookUnreachable("connection refused")
        if 200 <= status < 300:
            self.got.setdefault(url, []).append({**json.loads(body), "_signature": headers["Kaccy-Signature"],
                                                 "_body": body})
        return status

    async def addresses(self, host: str) -> list[str]:
        return self.dns.get(host, ["93.184.216.34"])


@pytest.fixture(params=SQL_KINDS)
def parts(request, tmp_path):  # noqa: ANN001, ANN201
    engine = fresh_engine(request.param, tmp_path)
    uow, store, clock, receivers = SqlUnitOfWorkFactory(engine), SqlServiceStore(engine), ManualClock(T0), Receivers()
    deliver = DeliverWebhooks(store, uow, receivers, clock, DeliverySettings(batch=2, first_retry=1, max_retry=4))
    yield uow, store, clock, receivers, deliver
    engine.dispose()


def commit(uow, *kinds: str) -> None:  # noqa: ANN001
    with uow() as u:
        u.record([DomainEvent(f"{k}:o-{n}:{uuid.uuid4().hex}", k, f"o-{n}", T0) for n, k in enumerate(kinds)])
        u.commit()


async def test_in_order_filtered_signed_and_retried_with_backoff(parts) -> None:  # noqa: ANN001
    uow, store, clock, receivers, deliver = parts
    commit(uow, "payment_detected")                                  # before the webhook: not sent
    register = RegisterWebhook(store, uow, clock, receivers)
    every = await register("http://r/every", None, "key_1")
    paid = await register("http://r/paid", ["order_paid"], "key_1")
    commit(uow, "payment_detected", "order_paid", "payment_confirmed", "order_paid", "payment_finalized")
    receivers.script["http://r/every"] = [500, None]
    assert await deliver() == 2                                       # /paid got both; /every failed
    assert [d["seq"] for d in receivers.got["http://r/paid"]] == [3, 5]
    state = store.webhook(every["webhook_id"])
    assert state.delivered_seq == 1 and state.attempts == 1 and state.last_error == "HTTP 500"
    assert state.next_attempt_at == T0 + dt.timedelta(seconds=1)
    assert await deliver() == 0                                       # not due yet
    clock.advance(1)
    assert await deliver() == 0 and store.webhook(every["webhook_id"]).attempts == 2   # no answer
    assert store.webhook(every["webhook_id"]).next_attempt_at == clock.now() + dt.timedelta(seconds=2)
    clock.advance(2)
    assert await deliver() == 5
    got = receivers.got["http://r/every"]
    assert [d["seq"] for d in got] == [2, 3, 4, 5, 6]
    assert [d["delivery_id"] for d in got] == [f"{every['webhook_id']}:{n}" for n in range(2, 7)]
    secret = every["secret"]
    assert all(verify_signature(secret, d["_body"], d["_signature"], int(clock.now().timestamp())) for d in got)
    state = store.webhook(every["webhook_id"])
    assert (state.delivered_seq, state.attempts, state.next_attempt_at, state.last_error) == (6, 0, None, None)
    assert store.webhook(paid["webhook_id"]).delivered_seq == 6       # skipped kinds move the cursor too


async def test_backoff_is_capped_and_redelivery_resends_with_the_same_ids(parts) -> None:  # noqa: ANN001
    uow, store, clock, receivers, deliver = parts
    hook = await RegisterWebhook(store, uow, clock, receivers)("http://r/x", None, "k")
    commit(uow, "payment_detected", "order_paid")
    receivers.script["http://r/x"] = [503] * 6
    waits = []
    for _ in range(6):
        await deliver()
        state = store.webhook(hook["webhook_id"])
        waits.append((state.next_attempt_at - clock.now()).total_seconds())
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 4, 4, 4]
    assert await deliver() == 2
    redeliver = RedeliverWebhook(store, uow)
    assert redeliver(hook["webhook_id"], 2)["delivered_seq"] == 1
    assert await deliver() == 1
    assert [d["delivery_id"] for d in receivers.got["http://r/x"]] == [f"{hook['webhook_id']}:{n}" for n in (1, 2, 2)]


async def test_a_slow_receiver_holds_up_only_its_own_webhook(parts) -> None:  # noqa: ANN001
    uow, store, clock, receivers, deliver = parts
    register = RegisterWebhook(store, uow, clock, receivers)
    await register("http://r/slow", None, "k")
    await register("http://r/fast", None, "k")
    receivers.slow.add("http://r/slow")
    stop = asyncio.Event()
    loop = asyncio.create_task(run_deliveries(deliver, stop, interval=0.01))
    commit(uow, "payment_detected")
    for _ in range(200):
        if receivers.got.get("http://r/fast"):
            break
        await asyncio.sleep(0.01)
    commit(uow, "order_paid")
    for _ in range(200):
        if len(receivers.got.get("http://r/fast", [])) == 2:
            break
        await asyncio.sleep(0.01)
    assert [d["kind"] for d in receivers.got["http://r/fast"]] == ["payment_detected", "order_paid"]
    loop.cancel()                      # the slow delivery is cancelled with the loop
    await asyncio.gather(loop, return_exceptions=True)
    assert loop.done()
