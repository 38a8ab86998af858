"""Software keys held in memory (BIP39 mnemonic), for regtest, tests and hot wallets."""
