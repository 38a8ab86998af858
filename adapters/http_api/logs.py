"""Structured logs: one JSON object per line, with the correlation id of the work in progress."""
from __future__ import annotations

import datetime as dt
import json
import logging

from kaccy_bitcoin.adapters.bitcoin_core.errors import redact_credentials
from kaccy_bitcoin.adapters.observability import correlation_id

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": redact_credentials(record.getMessage()), "pid": record.process}
        cid = correlation_id.get()
        if cid is not None:
            entry["correlation_id"] = cid
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = redact_credentials(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return json.dumps(entry, default=str)
