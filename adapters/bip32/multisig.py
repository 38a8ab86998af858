"""Addresses of an M-of-N P2WSH wallet: `wsh(sortedmulti(M, K1/<chain>/*, ..., KN/<chain>/*))`.

Each cosigner's account key is parsed by bip-utils and its two chain nodes cached; an
address costs one public derivation per key (BIP32 CKDpub: HMAC-SHA512 and a libsecp256k1
tweak-add through coincurve, as the single-key deriver does), and recent addresses are kept
(coin selection asks for the address of every coin). The witness script is the standard
multisig script over the keys in lexicographic order (BIP67, what `sortedmulti`
means); the descriptor's checksum is HWI's. tests/test_wallets_regtest.py checks addresses
against Bitcoin Core's `deriveaddresses` for the same descriptor.
"""
from __future__ import annotations

import functools
import hashlib
import hmac

from bip_utils import Bip32KeyNetVersions, Bip32Secp256k1, SegwitBech32Encoder
from coincurve import PublicKey
from bitcointx.core.script import OP_CHECKMULTISIG, CScript, CScriptOp
from hwilib.descriptor import AddChecksum

from kaccy_bitcoin.domain.bitcoin import HARDENED, AddressType, DerivationPath, Network
from kaccy_bitcoin.domain.coin_selection import multisig_input_weight
from kaccy_bitcoin.domain.errors import InvalidExtendedKey
from kaccy_bitcoin.domain.wallets import Wallet
from kaccy_bitcoin.ports.addresses import AddressDeriver

_HRP = {Network.MAINNET: "bc", Network.TESTNET: "tb", Network.SIGNET: "tb", Network.REGTEST: "bcrt"}
_VERSIONS = {True: Bip32KeyNetVersions(bytes.fromhex("0488b21e"), bytes.fromhex("0488ade4")),
             False: Bip32KeyNetVersions(bytes.fromhex("043587cf"), bytes.fromhex("04358394"))}


class MultisigAddressDeriver(AddressDeriver):
    address_type = AddressType.P2WSH

    def __init__(self, wallet: Wallet, network: Network) -> None:
        if not wallet.is_multisig:
            raise InvalidExtendedKey(f"wallet {wallet.name} has no cosigner keys")
        self.network = network
        self.wallet = wallet
        self._threshold = wallet.threshold
        versions = _VERSIONS[network is Network.MAINNET]
        self._chains: list[dict[int, tuple[bytes, bytes]]] = []   # per key, chain -> (chain code, public key)
        for key in wallet.keys:
            account = Bip32Secp256k1.FromExtendedKey(key.xpub, versions)
            nodes = {c: account.ChildKey(c) for c in (0, 1)}
            self._chains.append({c: (n.ChainCode().ToBytes(), n.PublicKey().RawCompressed().ToBytes())
                                 for c, n in nodes.items()})
        self._keys = functools.lru_cache(maxsize=4096)(self._derive_keys)
        self._address = functools.lru_cache(maxsize=4096)(self._encode_address)

    def _check(self, chain: int, index: int) -> None:
        if chain not in (0, 1):
            raise InvalidExtendedKey(f"chain must be 0 (receive) or 1 (change), got {chain}")
        if not 0 <= index < HARDENED:
            raise InvalidExtendedKey(f"address index out of range: {index}")

    def _derive_keys(self, chain: int, index: int) -> tuple[bytes, ...]:
        self._check(chain, index)
        found = []
        for nodes in self._chains:
            chain_code, parent = nodes[chain]
            tweak = hmac.new(chain_code, parent + index.to_bytes(4, "big"), hashlib.sha512).digest()[:32]
            found.append(PublicKey(parent).add(tweak).format())
        return tuple(found)

    def witness_script(self, chain: int, index: int) -> bytes:
        """OP_m <keys, sorted> OP_n OP_CHECKMULTISIG, encoded by python-bitcointx (its
        standard_multisig_redeem_script would build a CPubKey per key, whose pure-Python
        RIPEMD160 costs a millisecond each)."""
        keys = sorted(self._keys(chain, index))
        return bytes(CScript([CScriptOp.encode_op_n(self._threshold), *keys, CScriptOp.encode_op_n(len(keys)),
                              OP_CHECKMULTISIG]))

    def address(self, chain: int, index: int) -> str:
        return self._address(chain, index)

    def _encode_address(self, chain: int, index: int) -> str:
        program = hashlib.sha256(self.witness_script(chain, index)).digest()
        return SegwitBech32Encoder.Encode(_HRP[self.network], 0, program)

    def addresses(self, chain: int, start: int, count: int) -> list[str]:
        return [self.address(chain, i) for i in range(start, start + count)]

    def descriptor(self, chain: int) -> str:
        self._check(chain, 0)
        keys = ",".join(f"{k.expression()}/{chain}/*" for k in self.wallet.keys)
        return AddChecksum(f"wsh(sortedmulti({self._threshold},{keys}))")

    def path(self, chain: int, index: int) -> DerivationPath:
        """The first cosigner's path (every cosigner's is in `cosigners`)."""
        return self.wallet.keys[0].path.child(chain).child(index)

    def cosigners(self, chain: int, index: int) -> list[tuple[str, DerivationPath, bytes]]:
        found = [(k.fingerprint, k.path.child(chain).child(index), pub)
                 for k, pub in zip(self.wallet.keys, self._keys(chain, index))]
        return sorted(found, key=lambda c: c[2])

    def spend_weight(self) -> int:
        return multisig_input_weight(self._threshold, len(self.wallet.keys))
