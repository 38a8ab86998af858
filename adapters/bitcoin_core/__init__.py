"""Bitcoin Core (and Knots) over JSON-RPC with aiohttp."""
