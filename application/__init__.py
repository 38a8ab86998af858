"""Use cases: each loads aggregates, calls the domain, commits, then publishes."""
