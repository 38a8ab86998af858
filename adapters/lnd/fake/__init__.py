"""A fake LND REST server for tests: LND's routes, field names and encodings, simulated
channels and payments, real BOLT11 requests. See docs/lightning-fake.md."""
