"""Hardware wallets through Bitcoin Core's HWI library (hwilib)."""
