"""What the adapters report about themselves, for whoever runs them: the correlation id of the
work in progress (a context variable: set by the HTTP layer for a request, by the monitor for a
poll, and seen by every call that work makes), and observers of outgoing RPC calls."""
from __future__ import annotations

import contextvars
import logging
from typing import Callable

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("kaccy_correlation_id", default=None)

RpcObserver = Callable[[str, float, bool], None]
_rpc_observers: list[RpcObserver] = []
_rpc_log = logging.getLogger("kaccy_bitcoin.rpc")


def observe_rpc(observer: RpcObserver) -> Callable[[], None]:
    """Call `observer(method, seconds, ok)` after every RPC call; returns the undo."""
    _rpc_observers.append(observer)
    return lambda: _rpc_observers.remove(observer) if observer in _rpc_observers else None


def rpc_done(method: str, seconds: float, ok: bool) -> None:
    for observer in list(_rpc_observers):
        observer(method, seconds, ok)
    # One line a call is a lot (a poll makes several): at debug, for whoever is chasing one.
    if _rpc_log.isEnabledFor(logging.DEBUG):
        _rpc_log.debug("rpc %s", method, extra={"rpc_method": method, "duration_ms": round(seconds * 1000, 2),
                                               "ok": ok})
