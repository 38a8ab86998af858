"""Prometheus metrics of one service process (its own registry, so several apps in one test
process never collide). The database's figures come from counters the database keeps as rows
change (adapters/sql/metric_counters.py): a scrape reads a few rows, whatever the tables hold."""
from __future__ import annotations

from typing import Any, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _StoreCollector:
    """Payments by state, amounts received, withdrawals by state, the outbox's head."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Any:
        try:
            s = self._stats()
        except Exception:  # noqa: BLE001 - a scrape never fails for the database; /ready says why
            return
        payments = GaugeMetricFamily("kaccy_payments", "Orders' payments by state", labels=["status"])
        for state, count in sorted(s["payments"].items()):
            payments.add_metric([state], count)
        yield payments
        yield GaugeMetricFamily("kaccy_received_sat", "Satoshis received in confirmed, active outputs",
                                value=s["received_sat"])
        withdrawals = GaugeMetricFamily("kaccy_withdrawals", "Withdrawals by state", labels=["state"])
        for state, count in sorted(s["withdrawals"].items()):
            withdrawals.add_metric([state], count)
        yield withdrawals
        yield GaugeMetricFamily("kaccy_outbox_last_seq", "Seq of the newest committed event", value=s["last_seq"])


class Metrics:
    def __init__(self, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.http_requests = Counter("kaccy_http_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.http_latency = Histogram("kaccy_http_request_seconds", "HTTP request latency", ["route"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.rpc_latency = Histogram("kaccy_rpc_seconds", "Bitcoin Core RPC latency by method", ["method"],
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.rpc_errors = Counter("kaccy_rpc_errors", "Bitcoin Core RPC calls that failed", ["method"], registry=r)
        self.monitor_polls = Counter("kaccy_monitor_polls", "Monitor polls", ["result"], registry=r)
        self.monitor_lag = Gauge("kaccy_monitor_lag_blocks", "Blocks between the node's tip and the monitor's "
                                 "last committed poll", registry=r)
        self.events = Counter("kaccy_events", "Events the in-process monitor committed", ["kind"], registry=r)
        self.webhook_deliveries = Counter("kaccy_webhook_deliveries", "Webhook delivery attempts", ["result"],
                                          registry=r)
        self.node_up = Gauge("kaccy_bitcoin_node_up", "1 when the Bitcoin node answered its last check",
                             ["url"], registry=r)
        self.node_height = Gauge("kaccy_bitcoin_node_height", "The Bitcoin node's tip height", ["url"], registry=r)
        self.node_latency = Gauge("kaccy_bitcoin_node_rpc_seconds", "How long the Bitcoin node took to answer its "
                                  "last check", ["url"], registry=r)
        self.rate_limited = Counter("kaccy_rate_limited", "Requests refused by the rate limit", registry=r)
        for result in ("delivered", "failed"):   # every series exists from the start, at 0
            self.webhook_deliveries.labels(result)
        for result in ("ok", "error"):
            self.monitor_polls.labels(result)
        if stats is not None:
            r.register(_StoreCollector(stats))

    def rpc_call(self, method: str, seconds: float, ok: bool) -> None:
        self.rpc_latency.labels(method).observe(seconds)
        if not ok:
            self.rpc_errors.labels(method).inc()

    def observe_nodes(self, nodes: list[dict[str, Any]]) -> None:
        for n in nodes:
            up = n["state"] != "down"
            self.node_up.labels(n["url"]).set(1 if up else 0)
            if up and n["height"] is not None:
                self.node_height.labels(n["url"]).set(n["height"])
            if up and n["latency_ms"] is not None:
                self.node_latency.labels(n["url"]).set(n["latency_ms"] / 1000)

    def webhook_attempt(self, webhook_id: str, ok: bool) -> None:
        self.webhook_deliveries.labels("delivered" if ok else "failed").inc()

    def response(self) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
