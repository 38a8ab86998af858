"""Two cache tiers: immutable results (LRU, kept until evicted) and TTL results."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

_MISSING = object()


class TieredCache:
    def __init__(self, immutable_size: int = 20_000, ttl_size: int = 5_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._immutable: OrderedDict[Hashable, Any] = OrderedDict()
        self._ttl: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._immutable_size = immutable_size
        self._ttl_size = ttl_size
        self._clock = clock
        self.stats = {"immutable_hits": 0, "immutable_misses": 0, "ttl_hits": 0, "ttl_misses": 0}

    def get_immutable(self, key: Hashable) -> Any:
        value = self._immutable.get(key, _MISSING)
        if value is _MISSING:
            self.stats["immutable_misses"] += 1
            return _MISSING
        self._immutable.move_to_end(key)
        self.stats["immutable_hits"] += 1
        return value

    def put_immutable(self, key: Hashable, value: Any) -> None:
        self._immutable[key] = value
        self._immutable.move_to_end(key)
        while len(self._immutable) > self._immutable_size:
            self._immutable.popitem(last=False)

    def get_ttl(self, key: Hashable) -> Any:
        item = self._ttl.get(key)
        if item is None or item[0] < self._clock():
            self.stats["ttl_misses"] += 1
            if item is not None:
                del self._ttl[key]
            return _MISSING
        self.stats["ttl_hits"] += 1
        return item[1]

    def put_ttl(self, key: Hashable, value: Any, seconds: float) -> None:
        self._ttl[key] = (self._clock() + seconds, value)
        self._ttl.move_to_end(key)
        while len(self._ttl) > self._ttl_size:
            self._ttl.popitem(last=False)

    @staticmethod
    def missing(value: Any) -> bool:
        return value is _MISSING
