"""The tamper-evident audit trail: every entry of the audit log (the event outbox) is chained
to the one before it by a SHA-256 hash.

`hash = SHA-256(canonical(entry))`, where the canonical encoding is the UTF-8 of the JSON
object {"prev_hash", "seq", "event_id", "kind", "subject", "actor", "at", "data"} with sorted
keys, no whitespace and ASCII escapes; `at` is ISO 8601 in UTC with microseconds, and the
first entry's `prev_hash` is 64 zeros (GENESIS). Editing an entry changes its hash, removing
one leaves a gap in `seq` and a `prev_hash` that names nothing, reordering breaks the links:
`verify` finds the first entry where any of this happened.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Iterable

import attrs

GENESIS = "0" * 64
SYSTEM = "system"   # the actor of what the service does by itself (the monitor, the tracker)


def _utc_text(at: dt.datetime) -> str:
    at = at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at.astimezone(dt.timezone.utc)
    return at.isoformat(timespec="microseconds")


def canonical(prev_hash: str, seq: int, event_id: str, kind: str, subject: str, actor: str, at: dt.datetime,
              data: Any) -> bytes:
    body = {"prev_hash": prev_hash, "seq": seq, "event_id": event_id, "kind": kind, "subject": subject,
            "actor": actor, "at": _utc_text(at), "data": data}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def entry_hash(prev_hash: str, seq: int, event_id: str, kind: str, subject: str, actor: str, at: dt.datetime,
               data: Any) -> str:
    return hashlib.sha256(canonical(prev_hash, seq, event_id, kind, subject, actor, at, data)).hexdigest()


@attrs.frozen
class AuditEntry:
    """One entry as stored: the event, who caused it, and its place in the chain."""

    seq: int
    event_id: str
    kind: str
    subject: str
    actor: str
    at: dt.datetime
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def chained(cls, prev_hash: str, seq: int, event_id: str, kind: str, subject: str, actor: str,
                at: dt.datetime, data: dict[str, Any]) -> AuditEntry:
        return cls(seq, event_id, kind, subject, actor, at, data, prev_hash,
                   entry_hash(prev_hash, seq, event_id, kind, subject, actor, at, data))

    def computed_hash(self) -> str:
        return entry_hash(self.prev_hash, self.seq, self.event_id, self.kind, self.subject, self.actor, self.at,
                          self.data)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "id": self.event_id, "kind": self.kind, "subject": self.subject,
                "actor": self.actor, "at": _utc_text(self.at), "data": self.data,
                "prev_hash": self.prev_hash, "hash": self.hash}


def verify(entries: Iterable[AuditEntry], last_seq: int) -> dict[str, Any]:
    """Check the chain from seq 1 to `last_seq` (the highest number the log handed out), entries
    in seq order. {"ok": true, "entries", "head"}, or {"ok": false, "first_bad", "reason",
    "entries", "head"} naming the first seq that is missing, out of place, altered or unlinked."""
    expected_seq, prev, count, head = 1, GENESIS, 0, GENESIS

    def bad(seq: int, reason: str) -> dict[str, Any]:
        return {"ok": False, "first_bad": seq, "reason": reason, "entries": count, "head": head}

    for e in entries:
        if e.seq != expected_seq:
            return bad(expected_seq, "missing" if e.seq > expected_seq else "out_of_order")
        if e.prev_hash != prev:
            return bad(e.seq, "broken_link")
        if e.computed_hash() != e.hash:
            return bad(e.seq, "altered")
        prev = head = e.hash
        expected_seq += 1
        count += 1
    if count < last_seq:
        return bad(expected_seq, "missing")
    return {"ok": True, "entries": count, "head": head}
