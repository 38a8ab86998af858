"""BIP32 address derivation from an account extended public key (bip-utils)."""
