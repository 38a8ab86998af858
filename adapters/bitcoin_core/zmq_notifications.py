"""The node's ZMQ notifications (pyzmq), found with `getzmqnotifications`: nothing to configure.

Bitcoin Core publishes on the endpoints given by its `-zmqpub*` options; we subscribe to
`sequence` (blocks connected and disconnected, transactions entering and leaving the
mempool), `hashblock`, `hashtx` and `rawtx`, whichever it publishes, with one SUB socket
connected to each distinct endpoint. A message's content is not used: any message means
"poll now". An endpoint the node binds on every interface (`tcp://0.0.0.0:P`) is reached on
the RPC URL's host. ZMQ reconnects by itself when the node restarts; messages sent meanwhile
are lost, which the monitor's interval poll covers.

With KACCY_PROXY, a `tcp://` endpoint whose host is not in KACCY_PROXY_EXCEPT is reached through
the SOCKS5 proxy too (libzmq's ZMQ_SOCKS_PROXY, which sends the host name to the proxy); when the
proxy asks for a user and password, which libzmq cannot give, such an endpoint is not subscribed to
(the monitor polls on its interval): never a direct connection.

The node publishes a transaction's notification before its wallets have taken the transaction
in (both are fed from its validation queue, ZMQ first), so a poll right after a notification
can miss what it announced; `wait` therefore returns only after `syncwithvalidationinterfacequeue`,
which answers once that queue is drained (an RPC Core keeps out of its help but has had since
0.17; a node without it only loses that guarantee, and the monitor's follow-up poll covers it).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError, RpcError
from kaccy_bitcoin.ports.chain_notifications import ChainNotifications

log = logging.getLogger(__name__)
TOPICS = ("sequence", "hashblock", "hashtx", "rawtx")
_ANY_HOST = ("0.0.0.0", "*", "[::]", "::")
METHOD_NOT_FOUND = -32601   # a node built without ZMQ has no getzmqnotifications


def endpoints(notifications: list[dict[str, Any]], rpc_url: str) -> dict[str, list[str]]:
    """`{endpoint: [topic, ...]}` from `getzmqnotifications`' answer, for the topics we use."""
    host = urlsplit(rpc_url).hostname or "127.0.0.1"
    found: dict[str, list[str]] = {}
    for n in notifications:
        topic = str(n.get("type", "")).removeprefix("pub")
        if topic not in TOPICS:
            continue
        scheme, _, rest = str(n["address"]).partition("://")
        where, _, port = rest.rpartition(":")
        if scheme == "tcp" and where in _ANY_HOST:
            rest = f"{host}:{port}"
        found.setdefault(f"{scheme}://{rest}", []).append(topic)
    return found


def _through(endpoint: str, proxy: Any) -> str:
    """How `endpoint` is reached: "direct", "proxy", or "unreachable" (a proxy with credentials)."""
    scheme, _, rest = endpoint.partition("://")
    if proxy is None or scheme != "tcp":
        return "direct"
    host = urlsplit(f"tcp://{rest}").hostname or ""
    if proxy.bypasses(host):
        return "direct"
    if proxy.username is not None:
        log.info("not subscribing to %s: libzmq cannot give the proxy's user and password", endpoint)
        return "unreachable"
    return "proxy"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ZmqNotifications(ChainNotifications):
    def __init__(self, subscriptions: dict[str, list[str]], rpc: Any = None, proxy: Any = None) -> None:
        """`proxy`: the ProxySettings of KACCY_PROXY (adapters/net/proxy.py), or None."""
        subscriptions = {e: ts for e, ts in subscriptions.items() if _through(e, proxy) != "unreachable"}
        self._subscriptions = subscriptions
        self._rpc = rpc
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        if subscriptions:
            self._context = zmq.asyncio.Context()
            self._socket = self._context.socket(zmq.SUB)
            self._socket.setsockopt(zmq.RCVHWM, 0)   # keep every message until read (they are tiny)
            self._socket.setsockopt(zmq.LINGER, 0)
            for topic in sorted({t for ts in subscriptions.values() for t in ts}):
                self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
            # The SOCKS proxy option holds for the connections made after it is set (libzmq keeps it
            # per connection, reconnections included): the direct endpoints are connected first.
            for endpoint in sorted(subscriptions, key=lambda e: _through(e, proxy) == "proxy"):
                if _through(endpoint, proxy) == "proxy":
                    self._socket.setsockopt(zmq.SOCKS_PROXY, f"{_bracketed(proxy.host)}:{proxy.port}".encode())
                self._socket.connect(endpoint)

    @classmethod
    async def discover(cls, rpc: Any, proxy: Any = None) -> ZmqNotifications:
        """Subscribe to what the node at `rpc` (a BitcoinRpc) publishes; nothing if it publishes nothing."""
        try:
            answer = await rpc.call("getzmqnotifications")
        except RpcError as exc:
            if exc.rpc_code != METHOD_NOT_FOUND:
                raise
            answer = []
        return cls(endpoints(answer, rpc.url), rpc, proxy)

    @property
    def sources(self) -> list[str]:
        return [f"{','.join(sorted(topics))} {endpoint}" for endpoint, topics in self._subscriptions.items()]

    async def wait(self, timeout: float) -> bool:
        if self._socket is None:
            await asyncio.sleep(timeout)
            return False
        if not await self._socket.poll(timeout=max(timeout, 0) * 1000, flags=zmq.POLLIN):
            return False
        for _ in range(10_000):   # a burst wakes the monitor once
            if not await self._socket.poll(timeout=0, flags=zmq.POLLIN):
                break
            await self._socket.recv_multipart()
        await self._wallets_caught_up()
        return True

    async def _wallets_caught_up(self) -> None:
        if self._rpc is None:
            return
        try:
            await self._rpc.call("syncwithvalidationinterfacequeue")
        except RpcError as exc:
            if exc.rpc_code != METHOD_NOT_FOUND:
                log.warning("could not wait for the node's wallets after a notification: %s", exc)
                return
            log.info("the node cannot tell when its wallets caught up (%s); polling on the notification alone", exc)
            self._rpc = None
        except BitcoinCoreError as exc:   # the node is down or busy: the poll will say so too
            log.warning("could not wait for the node's wallets after a notification: %s", exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
