"""The bounds of a page of the event outbox (domain/event_limits.py)."""
from kaccy_bitcoin.domain.event_limits import MAX_LIMIT, MAX_SEQ

__all__ = ["MAX_LIMIT", "MAX_SEQ"]
