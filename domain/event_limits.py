"""The bounds of a page of the event outbox, apart from `events.py` so that the command line
can build its parser (and print `--help`) without importing the application; the HTTP API
documents and checks the same (adapters/http_api/fields.py)."""

MAX_LIMIT = 1000
MAX_SEQ = 2**63 - 1   # a BIGINT; a cursor beyond it is a mistake, not a position
