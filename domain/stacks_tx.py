"""Stacks transactions (SIP-005): the wire format, the sighash chain and single-sig signing.

What the peg-out needs and reads back: standard authorization with a single-sig P2PKH spending
condition (compressed key), any anchor mode, STX / fungible / non-fungible post-conditions,
and token-transfer and contract-call payloads. Signing follows SIP-005: the initial sighash is
SHA-512/256 of the transaction with the spending condition cleared (nonce 0, fee 0, empty
signature); the presign sighash is SHA-512/256(initial ‖ auth type ‖ fee ‖ nonce); the signature
is recoverable ECDSA over it (coincurve, RFC 6979, low-s) written as recovery id ‖ r ‖ s. The
txid is SHA-512/256 of the signed transaction.
"""
from __future__ import annotations

import hashlib
from typing import Union

import attrs

from kaccy_bitcoin.domain.stacks_codec import (
    ClarityValue, ContractPrincipal, InvalidStacksEncoding, Reader, StandardPrincipal, hash160, read_name,
    read_standard_principal, read_value, serialize, serialize_principal_body)

MAINNET_VERSION, TESTNET_VERSION = 0x00, 0x80
MAINNET_CHAIN_ID, TESTNET_CHAIN_ID = 0x00000001, 0x80000000
AUTH_STANDARD, AUTH_SPONSORED = 0x04, 0x05
HASH_MODE_P2PKH = 0x00
KEY_COMPRESSED = 0x00
ANCHOR_ON_CHAIN, ANCHOR_OFF_CHAIN, ANCHOR_ANY = 0x01, 0x02, 0x03
POST_CONDITION_ALLOW, POST_CONDITION_DENY = 0x01, 0x02
PAYLOAD_TOKEN_TRANSFER, PAYLOAD_CONTRACT_CALL = 0x00, 0x02
# Post-condition principals and condition codes.
PRINCIPAL_ORIGIN, PRINCIPAL_STANDARD, PRINCIPAL_CONTRACT = 0x01, 0x02, 0x03
EQ, GT, GTE, LT, LTE = 0x01, 0x02, 0x03, 0x04, 0x05
SENT, NOT_SENT = 0x10, 0x11
EMPTY_SIGNATURE = bytes(65)


def sha512_256(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


@attrs.frozen
class SingleSigCondition:
    """P2PKH single-sig spending condition: the signer's hash160, nonce, fee (micro-STX), signature."""

    signer: bytes
    nonce: int
    fee: int
    signature: bytes = EMPTY_SIGNATURE
    hash_mode: int = HASH_MODE_P2PKH
    key_encoding: int = KEY_COMPRESSED

    def to_bytes(self) -> bytes:
        return (bytes([self.hash_mode]) + self.signer + self.nonce.to_bytes(8, "big") + self.fee.to_bytes(8, "big")
                + bytes([self.key_encoding]) + self.signature)

    def cleared(self) -> SingleSigCondition:
        return attrs.evolve(self, nonce=0, fee=0, signature=EMPTY_SIGNATURE)


@attrs.frozen
class AssetInfo:
    contract: ContractPrincipal
    asset_name: str

    @classmethod
    def parse(cls, text: str) -> AssetInfo:
        """`SP….contract::asset-name`."""
        contract, sep, name = text.partition("::")
        if not sep or not name:
            raise InvalidStacksEncoding(f"not an asset identifier: {text!r}")
        return cls(ContractPrincipal.parse(contract), name)

    def to_bytes(self) -> bytes:
        name = self.asset_name.encode()
        contract = self.contract.name.encode()
        return (serialize_principal_body(self.contract.issuer) + bytes([len(contract)]) + contract
                + bytes([len(name)]) + name)


PostConditionPrincipal = Union[None, StandardPrincipal, ContractPrincipal]   # None: the origin


def _pc_principal(p: PostConditionPrincipal) -> bytes:
    if p is None:
        return bytes([PRINCIPAL_ORIGIN])
    if isinstance(p, StandardPrincipal):
        return bytes([PRINCIPAL_STANDARD]) + serialize_principal_body(p)
    name = p.name.encode()
    return bytes([PRINCIPAL_CONTRACT]) + serialize_principal_body(p.issuer) + bytes([len(name)]) + name


@attrs.frozen
class StxPostCondition:
    principal: PostConditionPrincipal
    condition: int
    amount: int

    def to_bytes(self) -> bytes:
        return b"\x00" + _pc_principal(self.principal) + bytes([self.condition]) + self.amount.to_bytes(8, "big")


@attrs.frozen
class FungiblePostCondition:
    """`principal` sends `condition` `amount` of `asset` (e.g. exactly the sBTC of a withdrawal)."""

    principal: PostConditionPrincipal
    asset: AssetInfo
    condition: int
    amount: int

    def to_bytes(self) -> bytes:
        return (b"\x01" + _pc_principal(self.principal) + self.asset.to_bytes() + bytes([self.condition])
                + self.amount.to_bytes(8, "big"))


@attrs.frozen
class NonFungiblePostCondition:
    principal: PostConditionPrincipal
    asset: AssetInfo
    asset_id: ClarityValue
    condition: int

    def to_bytes(self) -> bytes:
        return (b"\x02" + _pc_principal(self.principal) + self.asset.to_bytes() + serialize(self.asset_id)
                + bytes([self.condition]))


PostCondition = Union[StxPostCondition, FungiblePostCondition, NonFungiblePostCondition]


@attrs.frozen
class ContractCall:
    contract: ContractPrincipal
    function: str
    args: tuple = attrs.field(converter=tuple)

    def to_bytes(self) -> bytes:
        fn = self.function.encode()
        name = self.contract.name.encode()
        return (bytes([PAYLOAD_CONTRACT_CALL]) + serialize_principal_body(self.contract.issuer)
                + bytes([len(name)]) + name + bytes([len(fn)]) + fn + len(self.args).to_bytes(4, "big")
                + b"".join(serialize(a) for a in self.args))


@attrs.frozen
class TokenTransfer:
    recipient: Union[StandardPrincipal, ContractPrincipal]
    amount: int
    memo: bytes = bytes(34)

    def to_bytes(self) -> bytes:
        return (bytes([PAYLOAD_TOKEN_TRANSFER]) + serialize(self.recipient) + self.amount.to_bytes(8, "big")
                + self.memo.ljust(34, b"\0"))


@attrs.frozen
class StacksTransaction:
    version: int
    chain_id: int
    condition: SingleSigCondition
    payload: Union[ContractCall, TokenTransfer]
    post_conditions: tuple = attrs.field(converter=tuple, default=())
    post_condition_mode: int = POST_CONDITION_DENY
    anchor_mode: int = ANCHOR_ANY
    auth_type: int = AUTH_STANDARD

    def to_bytes(self) -> bytes:
        return (bytes([self.version]) + self.chain_id.to_bytes(4, "big") + bytes([self.auth_type])
                + self.condition.to_bytes() + bytes([self.anchor_mode, self.post_condition_mode])
                + len(self.post_conditions).to_bytes(4, "big") + b"".join(p.to_bytes() for p in self.post_conditions)
                + self.payload.to_bytes())

    @property
    def txid(self) -> str:
        return sha512_256(self.to_bytes()).hex()

    def initial_sighash(self) -> bytes:
        return sha512_256(attrs.evolve(self, condition=self.condition.cleared()).to_bytes())

    def presign_sighash(self) -> bytes:
        c = self.condition
        return sha512_256(self.initial_sighash() + bytes([self.auth_type]) + c.fee.to_bytes(8, "big")
                          + c.nonce.to_bytes(8, "big"))

    def sign(self, secret: bytes) -> StacksTransaction:
        """This transaction signed by the private key `secret` (32 bytes), which must be the signer's."""
        from coincurve import PrivateKey

        key = PrivateKey(secret)
        if hash160(key.public_key.format(compressed=True)) != self.condition.signer:
            raise InvalidStacksEncoding("the key does not belong to the transaction's signer")
        rsv = key.sign_recoverable(self.presign_sighash(), hasher=None)
        return attrs.evolve(self, condition=attrs.evolve(self.condition, signature=rsv[64:] + rsv[:64]))

    def recover_signer_key(self) -> bytes:
        """The compressed public key that made the signature (for verifying a submitted transaction)."""
        from coincurve import PublicKey

        sig = self.condition.signature
        if sig == EMPTY_SIGNATURE or sig[0] > 3:
            raise InvalidStacksEncoding("the transaction carries no valid signature")
        try:
            key = PublicKey.from_signature_and_message(sig[1:] + sig[:1], self.presign_sighash(), hasher=None)
        except Exception as e:  # noqa: BLE001 - coincurve raises ValueError/Exception for a bad signature
            raise InvalidStacksEncoding("the signature does not recover a key") from e
        return key.format(compressed=True)

    def verify(self) -> bool:
        """True when the signature recovers a key whose hash160 is the signer's."""
        try:
            return hash160(self.recover_signer_key()) == self.condition.signer
        except InvalidStacksEncoding:
            return False


def _read_pc_principal(r: Reader) -> PostConditionPrincipal:
    kind = r.byte()
    if kind == PRINCIPAL_ORIGIN:
        return None
    if kind == PRINCIPAL_STANDARD:
        return read_standard_principal(r)
    if kind == PRINCIPAL_CONTRACT:
        return ContractPrincipal(read_standard_principal(r), read_name(r))
    raise InvalidStacksEncoding(f"unknown post-condition principal 0x{kind:02x}")


def _read_asset(r: Reader) -> AssetInfo:
    issuer = read_standard_principal(r)
    contract = read_name(r)
    return AssetInfo(ContractPrincipal(issuer, contract), read_name(r))


def _read_post_condition(r: Reader) -> PostCondition:
    kind = r.byte()
    if kind == 0:
        return StxPostCondition(_read_pc_principal(r), r.byte(), r.u64())
    if kind == 1:
        return FungiblePostCondition(_read_pc_principal(r), _read_asset(r), r.byte(), r.u64())
    if kind == 2:
        p, asset = _read_pc_principal(r), _read_asset(r)
        return NonFungiblePostCondition(p, asset, read_value(r), r.byte())
    raise InvalidStacksEncoding(f"unknown post-condition type 0x{kind:02x}")


def _read_payload(r: Reader) -> Union[ContractCall, TokenTransfer]:
    kind = r.byte()
    if kind == PAYLOAD_CONTRACT_CALL:
        contract = ContractPrincipal(read_standard_principal(r), read_name(r))
        function = read_name(r)
        return ContractCall(contract, function, [read_value(r) for _ in range(r.u32())])
    if kind == PAYLOAD_TOKEN_TRANSFER:
        recipient = read_value(r)
        if not isinstance(recipient, (StandardPrincipal, ContractPrincipal)):
            raise InvalidStacksEncoding("a token transfer's recipient is a principal")
        return TokenTransfer(recipient, r.u64(), r.take(34))
    raise InvalidStacksEncoding(f"unsupported payload type 0x{kind:02x}")


def deserialize_transaction(data: bytes) -> StacksTransaction:
    """A standard-auth single-sig transaction; anything else is an InvalidStacksEncoding."""
    r = Reader(data)
    version, chain_id, auth_type = r.byte(), int.from_bytes(r.take(4), "big"), r.byte()
    if version not in (MAINNET_VERSION, TESTNET_VERSION):
        raise InvalidStacksEncoding(f"unknown transaction version 0x{version:02x}")
    if auth_type != AUTH_STANDARD:
        raise InvalidStacksEncoding("only standard (unsponsored) authorization is supported")
    hash_mode = r.byte()
    if hash_mode != HASH_MODE_P2PKH:
        raise InvalidStacksEncoding(f"only single-sig P2PKH spending conditions are supported, not 0x{hash_mode:02x}")
    condition = SingleSigCondition(signer=r.take(20), nonce=r.u64(), fee=r.u64(), key_encoding=r.byte(),
                                   signature=r.take(65))
    if condition.key_encoding != KEY_COMPRESSED:
        raise InvalidStacksEncoding("only compressed public keys are supported")
    anchor, mode = r.byte(), r.byte()
    if anchor not in (ANCHOR_ON_CHAIN, ANCHOR_OFF_CHAIN, ANCHOR_ANY) or mode not in (1, 2):
        raise InvalidStacksEncoding("unknown anchor or post-condition mode")
    post_conditions = [_read_post_condition(r) for _ in range(r.u32())]
    payload = _read_payload(r)
    r.done()
    return StacksTransaction(version, chain_id, condition, payload, post_conditions, mode, anchor, auth_type)


def network_params(mainnet: bool) -> tuple[int, int]:
    """(transaction version, chain id): mainnet, or the test networks (testnet and the regtest
    Stacks nodes run beside our regtest bitcoind)."""
    return (MAINNET_VERSION, MAINNET_CHAIN_ID) if mainnet else (TESTNET_VERSION, TESTNET_CHAIN_ID)
