"""Several Bitcoin nodes: the pure classification (domain/nodes.py) and the settings that list them."""
from __future__ import annotations

import datetime as dt
import pathlib

import pytest
from hypothesis import given, strategies as st

from kaccy_bitcoin.bootstrap import config
from kaccy_bitcoin.domain.nodes import NodeReport, NodeState, NodeStatus, NodeTip, check_height, classify
from kaccy_bitcoin.ports.bitcoin_node import NodeSet

P, S, D, L, X = NodeState.PRIMARY, NodeState.STANDBY, NodeState.DOWN, NodeState.LAGGING, NodeState.DIVERGED


def tip(height: int, name: str = "t") -> NodeTip:
    return NodeTip(height, f"{name}{height}")


def test_first_reachable_agreeing_node_is_primary() -> None:
    v = classify([tip(10), tip(10), tip(10)], ["a", "a", "a"], 2)
    assert v.states == (P, S, S) and not v.diverged and v.primary == 0
    v = classify([None, tip(10), tip(10)], [None, "a", "a"], 2)
    assert v.states == (D, P, S) and v.primary == 1


def test_a_node_more_than_max_lag_behind_is_lagging() -> None:
    v = classify([tip(7), tip(10), tip(8)], ["a", "a", "a"], 2)
    assert v.states == (L, P, S) and not v.diverged


def test_two_nodes_that_disagree_are_both_diverged_and_the_first_serves() -> None:
    v = classify([tip(20), tip(21)], ["a", "b"], 2)
    assert v.states == (X, X) and v.diverged and v.all_diverged and v.primary is None and v.serving == 0


def test_a_strict_majority_goes_on_and_the_odd_node_is_diverged() -> None:
    v = classify([tip(20), tip(20), tip(20)], ["b", "a", "a"], 2)
    assert v.states == (X, P, S) and v.diverged and not v.all_diverged
    v = classify([tip(20), tip(20), tip(20), tip(20)], ["a", "a", "b", "b"], 2)
    assert set(v.states) == {X}


def test_check_height_is_the_lowest_tip_less_the_fork_depth() -> None:
    assert check_height([tip(30), None, tip(25)], 6) == 19
    assert check_height([tip(3)], 6) == 0
    assert check_height([None, None], 6) is None


def test_no_node_answered() -> None:
    v = classify([None, None], [None, None], 2)
    assert v.states == (D, D) and v.serving is None and not v.diverged


nodes = st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 50), st.sampled_from("ab"))), min_size=1, max_size=6)


@given(nodes, st.integers(0, 5))
def test_classification_properties(spec: list, max_lag: int) -> None:
    tips = [tip(h) if s else None for s in spec for h in [s[0] if s else 0]]
    hashes = [s[1] if s else None for s in spec]
    v = classify(tips, hashes, max_lag)
    up = [i for i, t in enumerate(tips) if t is not None]
    assert [i for i, s in enumerate(v.states) if s is not D] == up
    assert v.diverged == (len({hashes[i] for i in up}) > 1)
    assert list(v.states).count(P) == (1 if any(s.usable for s in v.states) else 0)
    if v.primary is not None:   # the primary is the first usable node; every usable node agrees
        assert all(not s.usable for s in v.states[:v.primary])
        agreed = {hashes[i] for i, s in enumerate(v.states) if s.usable}
        assert len(agreed) == 1
        highest = max(tips[i].height for i, s in enumerate(v.states) if s in (P, S, L))
        assert all(tips[i].height >= highest - max_lag for i, s in enumerate(v.states) if s.usable)
    if up and not v.diverged:
        assert v.primary is not None
    if v.diverged and v.primary is None:
        assert v.serving == up[0]


def test_rpc_url_lists_several_nodes_sharing_credentials() -> None:
    values = config.load({"KACCY_BITCOIN_RPC_URL": "http://127.0.0.1:1, http://127.0.0.1:2",
                          "KACCY_BITCOIN_RPC_USER": "u", "KACCY_BITCOIN_RPC_PASSWORD": "p",
                          "KACCY_NODE_MAX_LAG": "3"})
    assert [n["url"] for n in values["bitcoin_nodes"]] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert all(n["user"] == "u" and n["password"] == "p" for n in values["bitcoin_nodes"])
    assert values["bitcoin_rpc_url"] == "http://127.0.0.1:1"
    assert values["node_max_lag"] == 3 and values["node_fork_depth"] == 6
    one = config.load({"KACCY_BITCOIN_RPC_URL": "http://127.0.0.1:1", "KACCY_BITCOIN_RPC_USER": "u"})
    assert one["bitcoin_rpc_url"] == "http://127.0.0.1:1" and len(one["bitcoin_nodes"]) == 1
    with pytest.raises(config.ConfigError):
        config.load({"KACCY_BITCOIN_RPC_URL": "http://127.0.0.1:1,,http://127.0.0.1:2"})
    with pytest.raises(config.ConfigError):
        config.load({"KACCY_NODE_FORK_DEPTH": "-1"})


def test_toml_bitcoin_node_tables(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "kaccy.toml"
    path.write_text('network = "regtest"\n'
                    '[[bitcoin_node]]\nurl = "http://127.0.0.1:1"\nuser = "a"\npassword = "pa"\n'
                    '[[bitcoin_node]]\nurl = "http://127.0.0.1:2"\ncookie = "/tmp/cookie"\n')
    values = config.load({"KACCY_CONFIG": str(path)})
    assert values["bitcoin_nodes"] == [
        {"url": "http://127.0.0.1:1", "user": "a", "password": "pa", "cookie": None},
        {"url": "http://127.0.0.1:2", "user": None, "password": None, "cookie": "/tmp/cookie"}]
    assert (values["bitcoin_rpc_url"], values["bitcoin_rpc_user"]) == ("http://127.0.0.1:1", "a")
    path.write_text('[[bitcoin_node]]\nurl = "http://127.0.0.1:1"\nsecret = "x"\n')
    with pytest.raises(config.ConfigError, match="secret"):
        config.load({"KACCY_CONFIG": str(path)})
    path.write_text('[[bitcoin_node]]\nurl = "http://127.0.0.1:1"\n')
    with pytest.raises(config.ConfigError, match="user and password, or cookie"):
        config.load({"KACCY_CONFIG": str(path)})


class FakeNodes(NodeSet):
    """Two nodes whose agreement the test sets."""

    def __init__(self) -> None:
        self.diverged = False

    async def cross_check(self) -> NodeReport:
        state = NodeState.DIVERGED if self.diverged else NodeState.PRIMARY
        nodes = (NodeStatus("http://127.0.0.1:1", state, 10, "a" * 64), NodeStatus("http://127.0.0.1:2",
                 NodeState.DIVERGED if self.diverged else NodeState.STANDBY, 10, ("b" if self.diverged else "a") * 64))
        return NodeReport(nodes, self.diverged, {"check_height": 4, "nodes": []})

    async def finality_held(self) -> bool:
        return self.diverged


async def test_each_divergence_is_recorded_and_alerted_once_and_so_is_its_end() -> None:
    from kaccy_bitcoin.adapters.memory.clock import ManualClock
    from kaccy_bitcoin.adapters.memory.publisher import RecordingNotifier
    from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
    from kaccy_bitcoin.application.nodes import CrossCheckNodes
    from kaccy_bitcoin.bootstrap.container import _subscribe_notifier

    nodes, uow, notifier = FakeNodes(), MemoryUnitOfWorkFactory(), RecordingNotifier()
    clock = ManualClock(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    check = CrossCheckNodes(nodes, uow, clock, _subscribe_notifier(notifier))
    other = CrossCheckNodes(nodes, uow, clock, _subscribe_notifier(RecordingNotifier()))   # another process
    assert await check() == []
    nodes.diverged = True
    first = await check()
    assert [e.kind for e in first] == ["node_divergence"] and await check() == [] and await other() == []
    nodes.diverged = False
    assert [e.kind for e in await other()] == ["node_converged"] and await check() == []
    nodes.diverged = True
    again = await check()
    assert [e.id for e in first + again] == ["node_divergence:1", "node_divergence:2"]
    assert [e.kind for e in notifier.notified] == ["node_divergence", "node_divergence"]
    with uow.read() as u:
        assert [e.event.kind for e in u.audit.after(0, 10)] == ["node_divergence", "node_converged", "node_divergence"]


class StubRpc:
    def __init__(self, url: str, chain: list[str]) -> None:
        self.url, self.chain, self.up, self.calls, self.proxy_down = url, chain, True, [], False

    async def call(self, method: str, *params, wallet=None):  # noqa: ANN001, ANN002, ANN201
        from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcConnectionError

        from kaccy_bitcoin.adapters.bitcoin_core.errors import NodeProxyUnreachable

        self.calls.append(method)
        if self.proxy_down:
            raise NodeProxyUnreachable(f"{method}: the proxy refused the connection")
        if not self.up:
            raise RpcConnectionError(f"{method}: connection refused")
        if method == "getblockhash":
            return self.chain[params[0]]
        if method == "listdescriptors":
            return {"descriptors": []}
        if method == "sendrawtransaction":
            return "ab" * 32
        raise AssertionError(method)


class StubBackend:
    """What the pool uses of a BitcoinCoreBackend, over a chain of block hashes."""

    def __init__(self, url: str, chain: list[str]) -> None:
        self.rpc, self.wallet, self._wallet_ready = StubRpc(url, chain), "w", True

    async def status(self, state: NodeState) -> NodeStatus:
        await self.rpc.call("getblockchaininfo") if not self.rpc.up or self.rpc.proxy_down else None
        return NodeStatus(self.rpc.url, state, len(self.rpc.chain) - 1, self.rpc.chain[-1], 1.0, 290000)

    async def _ensure_wallet(self) -> None:
        return None

    async def mempool_txids(self) -> set:
        await self.rpc.call("getrawmempool") if not self.rpc.up or self.rpc.proxy_down else None
        return {self.rpc.url}

    async def broadcast(self, raw: bytes):  # noqa: ANN201
        from kaccy_bitcoin.domain.bitcoin import Txid

        return Txid(await self.rpc.call("sendrawtransaction", raw.hex()))


async def test_the_pool_fails_over_broadcasts_to_all_and_holds_finality_while_diverged() -> None:
    from kaccy_bitcoin.adapters.bitcoin_core.errors import NodeProxyUnreachable
    from kaccy_bitcoin.adapters.bitcoin_core.pool import NodePool
    from kaccy_bitcoin.domain.errors import NodesDiverged

    shared = [f"h{i}" for i in range(20)]
    a, b = StubBackend("http://127.0.0.1:1", list(shared)), StubBackend("http://127.0.0.1:2", list(shared))
    pool = NodePool([a, b], max_lag=2, fork_depth=6)   # type: ignore[list-item]
    report = await pool.cross_check()
    assert [n.state for n in report.nodes] == [P, S] and not await pool.finality_held()
    assert await pool.mempool_txids() == {a.rpc.url}
    await pool.broadcast(b"\x01")
    assert a.rpc.calls.count("sendrawtransaction") == b.rpc.calls.count("sendrawtransaction") == 1
    a.rpc.up = False   # refused: the read goes to B at once, and A is down
    assert await pool.mempool_txids() == {b.rpc.url}
    assert [n.state for n in pool.nodes] == [D, P]
    calls = len(a.rpc.calls)
    await pool.cross_check()   # within A's back-off: not asked
    assert len(a.rpc.calls) == calls
    a.rpc.up = True
    for n in pool.nodes:
        n.down_until = 0
    assert [n.state for n in (await pool.cross_check()).nodes] == [P, S]
    for i in range(13, 20):   # B follows another chain from height 13: 20 - 1 - 6 = 13 differs
        b.rpc.chain[i] = f"x{i}"
    report = await pool.cross_check()
    assert report.diverged and [n.state for n in report.nodes] == [X, X] and await pool.finality_held()
    assert report.detail["check_height"] == 13
    assert report.detail["urls"] == [a.rpc.url, b.rpc.url] and report.detail["heights"] == [19, 19]
    assert report.detail["hashes"][0] != report.detail["hashes"][1] and report.detail["hashes"][1] == "x13"
    with pytest.raises(NodesDiverged):
        await pool.broadcast(b"\x01")
    assert await pool.mempool_txids() == {a.rpc.url}   # the first keeps answering reads
    a.rpc.proxy_down = b.rpc.proxy_down = True   # KACCY_PROXY down: the proxy's error, no node marked down
    with pytest.raises(NodeProxyUnreachable):
        await pool.mempool_txids()
    assert [n.state for n in pool.nodes] == [X, X]
