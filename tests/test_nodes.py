"""Several Bitcoin nodes: the pure classification (domain/nodes.py) and the settings that list them."""
from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, strategies as st

from kaccy_bitcoin.bootstrap import config
from kaccy_bitcoin.domain.nodes import NodeState, NodeTip, check_height, classify

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
