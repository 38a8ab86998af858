"""LND over its REST API: the `LightningNode` adapter and a fake LND server for tests."""
