"""Several Bitcoin nodes: which one to use, and whether they still follow the same chain.

Pure rules over what each node said of its tip and of one block hash. Nodes come in the
operator's order of preference. A node that did not answer is DOWN. The others are compared
at the check height (the lowest tip of those that answered, less the fork depth): when their
hashes there differ, the nodes have diverged. A strict majority agreeing on one hash goes on
and the others are DIVERGED; without a strict majority every node that answered is DIVERGED.
Among the nodes that agree, one more than `max_lag` blocks below the highest is LAGGING.
The first node left is the PRIMARY, the rest STANDBY.
"""
from __future__ import annotations

import enum
from collections import Counter
from typing import Any, Sequence

import attrs

DEFAULT_MAX_LAG = 2
DEFAULT_FORK_DEPTH = 6


class NodeState(str, enum.Enum):
    PRIMARY = "primary"
    STANDBY = "standby"
    DOWN = "down"
    LAGGING = "lagging"
    DIVERGED = "diverged"

    @property
    def usable(self) -> bool:
        return self in (NodeState.PRIMARY, NodeState.STANDBY)


@attrs.frozen
class NodeTip:
    """A node's best block."""

    height: int = attrs.field(validator=attrs.validators.ge(0))
    best_block_hash: str


def check_height(tips: Sequence[NodeTip | None], fork_depth: int) -> int | None:
    """The height whose block hashes are compared: the lowest tip less `fork_depth` (not below
    0); None when no node answered."""
    heights = [t.height for t in tips if t is not None]
    return max(0, min(heights) - fork_depth) if heights else None


@attrs.frozen
class NodeVerdict:
    """Each node's state (in preference order) and whether the nodes disagree."""

    states: tuple[NodeState, ...]
    diverged: bool

    @property
    def primary(self) -> int | None:
        """The node calls go to; None when none is usable."""
        return next((i for i, s in enumerate(self.states) if s is NodeState.PRIMARY), None)

    @property
    def serving(self) -> int | None:
        """The node that answers reads: the primary, else (every node diverged or lagging) the
        first that answered; None when none did."""
        if self.primary is not None:
            return self.primary
        return next((i for i, s in enumerate(self.states) if s is not NodeState.DOWN), None)

    @property
    def all_diverged(self) -> bool:
        """Diverged with no node left to trust: reads go on, nothing is final, no withdrawal."""
        return self.diverged and self.primary is None


def classify(tips: Sequence[NodeTip | None], hashes: Sequence[str | None], max_lag: int) -> NodeVerdict:
    """The verdict from each node's tip (None: it did not answer) and its block hash at the
    check height (None: it did not answer that, and counts as down)."""
    if len(tips) != len(hashes):
        raise ValueError("one hash per node is needed")
    up = [i for i, (t, h) in enumerate(zip(tips, hashes)) if t is not None and h is not None]
    states = [NodeState.DOWN] * len(tips)
    counts = Counter(hashes[i] for i in up)
    diverged = len(counts) > 1
    agreeing = up
    if diverged:
        (top, n), = counts.most_common(1)
        majority = top if 2 * n > len(up) else None
        agreeing = [i for i in up if hashes[i] == majority]
        for i in up:
            if hashes[i] != majority:
                states[i] = NodeState.DIVERGED
    if agreeing:
        highest = max(tips[i].height for i in agreeing)   # type: ignore[union-attr]
        first = True
        for i in agreeing:
            if tips[i].height < highest - max_lag:   # type: ignore[union-attr]
                states[i] = NodeState.LAGGING
            else:
                states[i] = NodeState.PRIMARY if first else NodeState.STANDBY
                first = False
    return NodeVerdict(tuple(states), diverged)


def divergence_data(urls: Sequence[str], tips: Sequence[NodeTip | None], hashes: Sequence[str | None],
                    height: int | None) -> dict[str, Any]:
    """What an event about the nodes' agreement says: the check height and, per node, its url
    (without credentials), tip height and hash at the check height; the same again as lists in
    node order (`urls`, `heights`, `hashes`), as the event is described to its readers."""
    nodes = [{"url": u, "height": t.height if t else None, "hash": h} for u, t, h in zip(urls, tips, hashes)]
    return {"check_height": height, "nodes": nodes, "urls": [n["url"] for n in nodes],
            "heights": [n["height"] for n in nodes], "hashes": [n["hash"] for n in nodes]}


@attrs.frozen
class NodeStatus:
    """One node as `kaccy-bitcoin nodes` shows it (url without credentials)."""

    url: str
    state: NodeState
    height: int | None = None
    best_block_hash: str | None = None
    latency_ms: float | None = None
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state.value, "height": self.height,
                "best_block_hash": self.best_block_hash, "latency_ms": self.latency_ms, "version": self.version}


@attrs.frozen
class NodeReport:
    """Every node's status after a cross-check, and what an event about their agreement says."""

    nodes: tuple[NodeStatus, ...]
    diverged: bool = False
    detail: dict[str, Any] = attrs.field(factory=dict)

    @property
    def all_diverged(self) -> bool:
        return self.diverged and not any(n.state is NodeState.PRIMARY for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.to_dict() for n in self.nodes]}
