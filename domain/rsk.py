"""Rootstock (RSK) PowPeg encodings: units, the peg-in v1 OP_RETURN, Bridge calls and logs, and
legacy EIP-155 transactions.

Integers only: 1 sat = 10^10 wei, and a wei amount that is not a whole number of sats is refused,
never rounded. The peg-in payload is RSKIP170's `52534b54 01 <rsk address:20> [<type:1>
<hash160:20>]` (refund type 1 P2PKH, 2 P2SH). The Bridge's methods and events are those of rskj
(co.rsk.peg.BridgeMethods, BridgeEvents); call data and logs by eth-abi, transactions by eth-account.
"""
from __future__ import annotations

from typing import Any

import attrs

from kaccy_bitcoin.domain.bitcoin import Address, AddressType
from kaccy_bitcoin.domain.errors import DomainError

WEI_PER_SAT = 10**10
BRIDGE_ADDRESS = "0x0000000000000000000000000000000001000006"
PEGIN_PREFIX = bytes.fromhex("52534b54")   # "RSKT"
PEGIN_V1 = 0x01
REFUND_P2PKH, REFUND_P2SH = 0x01, 0x02
CHAIN_IDS = {"mainnet": 30, "testnet": 31, "regtest": 33}
# A value transfer to the Bridge: the base cost and the Bridge's fixed cost for a release request.
PEGOUT_GAS = 21_000 + 23_000

# name: (argument types, result types) — rskj BridgeMethods.
BRIDGE_METHODS = {
    "getFederationAddress": ((), ("string",)),
    "getBtcTxHashProcessedHeight": (("string",), ("int64",)),
    "getMinimumLockTxValue": ((), ("int256",)),
}
# event name: [(type, indexed, field name)] — rskj BridgeEvents.
BRIDGE_EVENTS = {
    "pegin_btc": [("address", True, "receiver"), ("bytes32", True, "btcTxHash"), ("int256", False, "amount"),
                  ("int256", False, "protocolVersion")],
    "rejected_pegin": [("bytes32", True, "btcTxHash"), ("int256", False, "reason")],
    "unrefundable_pegin": [("bytes32", True, "btcTxHash"), ("int256", False, "reason")],
    "release_request_received": [("address", True, "sender"), ("string", False, "btcDestinationAddress"),
                                 ("uint256", False, "amount")],
    "release_request_rejected": [("address", True, "sender"), ("uint256", False, "amount"),
                                 ("int256", False, "reason")],
    "batch_pegout_created": [("bytes32", True, "btcTxHash"), ("bytes", False, "releaseRskTxHashes")],
    "pegout_confirmed": [("bytes32", True, "btcTxHash"), ("uint256", False, "pegoutCreationRskBlockNumber")],
}
REJECTED_PEGIN_REASONS = {1: "pegin_cap_surpassed", 2: "legacy_pegin_multisig_sender",
                          3: "legacy_pegin_undetermined_sender", 4: "pegin_v1_invalid_payload", 5: "invalid_amount"}
UNREFUNDABLE_PEGIN_REASONS = {1: "legacy_pegin_undetermined_sender", 3: "invalid_amount",
                              4: "outputs_sent_to_different_types_of_feds"}
REJECTED_PEGOUT_REASONS = {1: "low_amount", 2: "caller_contract", 3: "fee_above_value"}


class InvalidRskData(DomainError):
    """An RSK amount, address, payload, call result or log that is not what the protocol allows."""

    code = "invalid_rsk_data"


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRskData(f"{what} must be an integer, not {value!r}")
    if value < 0:
        raise InvalidRskData(f"{what} must not be negative: {value}")
    return value


def sat_to_wei(sats: int) -> int:
    return _whole(sats, "an amount in sat") * WEI_PER_SAT


def wei_to_sat(wei: int) -> int:
    """Whole sats in `wei`; a fraction of a sat is an error, never rounded away."""
    sats, rest = divmod(_whole(wei, "an amount in wei"), WEI_PER_SAT)
    if rest:
        raise InvalidRskData(f"{wei} wei is not a whole number of sats (1 sat = 10^10 wei)")
    return sats


def wei_to_sat_floor(wei: int) -> tuple[int, int]:
    """(whole sats, leftover wei): for a balance, where the dust below a sat is reported, not lost."""
    return divmod(_whole(wei, "an amount in wei"), WEI_PER_SAT)


def normalize_address(address: str | bytes) -> str:
    """An RSK account as sent on the wire: `0x` and 40 lower-case hex digits (RSK's EIP-1191
    checksum differs from Ethereum's EIP-55, so no mixed case is produced or trusted)."""
    if isinstance(address, bytes):
        if len(address) != 20:
            raise InvalidRskData("an RSK address is 20 bytes")
        return "0x" + address.hex()
    text = address.lower()
    if not (text.startswith("0x") and len(text) == 42 and all(ch in "0123456789abcdef" for ch in text[2:])):
        raise InvalidRskData(f"not an RSK address: {address!r}")
    return text


def address_of_public_key(public_key: bytes) -> str:
    """keccak256 of the uncompressed key's 64 bytes, last 20 (eth-keys), lower case."""
    from eth_keys import keys

    try:
        key = keys.PublicKey.from_compressed_bytes(public_key) if len(public_key) == 33 else keys.PublicKey(
            public_key[-64:])
    except Exception as e:  # noqa: BLE001 - eth-keys raises several types for a bad key
        raise InvalidRskData("not a secp256k1 public key") from e
    return "0x" + key.to_canonical_address().hex()


# --- peg-in v1 (RSKIP170) -----------------------------------------------------------------------

@attrs.frozen
class PeginPayload:
    rsk_address: str
    refund_type: int | None = None
    refund_hash: bytes | None = None


def pegin_payload(rsk_address: str, refund: Address | None = None) -> bytes:
    """The OP_RETURN data of a peg-in v1: our RSK account and, optionally, a P2PKH or P2SH refund
    address (the Bridge refunds any other kind to the sender, which may not be ours)."""
    out = PEGIN_PREFIX + bytes([PEGIN_V1]) + bytes.fromhex(normalize_address(rsk_address)[2:])
    if refund is None:
        return out
    spk = refund.script_pubkey()
    if refund.type is AddressType.P2PKH:
        return out + bytes([REFUND_P2PKH]) + spk[3:23]
    if refund.type is AddressType.P2SH:
        return out + bytes([REFUND_P2SH]) + spk[2:22]
    raise InvalidRskData(f"a peg-in refund address is P2PKH or P2SH, not {refund.type.value}")


def pegin_script(rsk_address: str, refund: Address | None = None) -> bytes:
    """The zero-value output's scriptPubKey: OP_RETURN <payload>."""
    from bitcointx.core.script import OP_RETURN, CScript

    return bytes(CScript([OP_RETURN, pegin_payload(rsk_address, refund)]))


def parse_pegin_payload(data: bytes) -> PeginPayload:
    if data[:4] != PEGIN_PREFIX or len(data) < 5 or data[4] != PEGIN_V1 or len(data) not in (25, 46):
        raise InvalidRskData("not a peg-in v1 payload")
    if len(data) == 25:
        return PeginPayload(normalize_address(data[5:25]))
    if data[25] not in (REFUND_P2PKH, REFUND_P2SH):
        raise InvalidRskData(f"unknown peg-in refund address type {data[25]}")
    return PeginPayload(normalize_address(data[5:25]), data[25], data[26:46])


# --- Bridge calls and logs ----------------------------------------------------------------------

def _signature(name: str, types: tuple[str, ...] | list[str]) -> str:
    return f"{name}({','.join(types)})"


def selector(name: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=_signature(name, BRIDGE_METHODS[name][0]))[:4]


def encode_call(name: str, *args: Any) -> str:
    """`data` for eth_call to the Bridge, 0x-hex."""
    from eth_abi import encode

    types = BRIDGE_METHODS[name][0]
    return "0x" + (selector(name) + encode(list(types), list(args))).hex()


def decode_result(name: str, data: str) -> Any:
    """The single result of a Bridge method, from eth_call's 0x-hex answer."""
    from eth_abi import decode

    try:
        return decode(list(BRIDGE_METHODS[name][1]), bytes.fromhex(data.removeprefix("0x")))[0]
    except Exception as e:  # noqa: BLE001 - eth-abi raises its own tree, hex parsing ValueError
        raise InvalidRskData(f"{name}: an answer that is not its ABI result: {data[:80]!r}") from e


def event_topic(name: str) -> str:
    from eth_utils import keccak

    return "0x" + keccak(text=_signature(name, [t for t, _i, _n in BRIDGE_EVENTS[name]])).hex()


@attrs.frozen
class BridgeLog:
    name: str
    args: dict = attrs.field(hash=False)


def decode_log(topics: list[str], data: str) -> BridgeLog | None:
    """A Bridge log by its first topic; None for an event this module does not follow."""
    from eth_abi import decode

    if not topics:
        return None
    names = {event_topic(n): n for n in BRIDGE_EVENTS}
    name = names.get(topics[0].lower())
    if name is None:
        return None
    fields = BRIDGE_EVENTS[name]
    indexed = [f for f in fields if f[1]]
    plain = [f for f in fields if not f[1]]
    if len(topics) != 1 + len(indexed):
        raise InvalidRskData(f"{name}: {len(topics)} topics, expected {1 + len(indexed)}")
    try:
        args = {n: decode([t], bytes.fromhex(topic.removeprefix("0x")))[0]
                for (t, _i, n), topic in zip(indexed, topics[1:])}
        args.update(zip([n for _t, _i, n in plain],
                        decode([t for t, _i, _n in plain], bytes.fromhex(data.removeprefix("0x")))))
    except Exception as e:  # noqa: BLE001
        raise InvalidRskData(f"{name}: a log whose data is not its ABI encoding") from e
    for key, value in list(args.items()):
        if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
            args[key] = value.lower()
        elif isinstance(value, bytes) and key == "btcTxHash":
            args[key] = value.hex()
    return BridgeLog(name, args)


# --- transactions -------------------------------------------------------------------------------

def sign_legacy_transaction(secret: bytes, *, nonce: int, gas_price: int, gas: int, to: str, value: int,
                            chain_id: int, data: bytes = b"") -> tuple[bytes, str]:
    """(raw transaction, its hash) of a legacy transaction with EIP-155 replay protection."""
    from eth_account import Account

    for what, n in (("nonce", nonce), ("gas price", gas_price), ("gas", gas), ("value", value),
                    ("chain id", chain_id)):
        _whole(n, what)
    signed = Account.sign_transaction({"nonce": nonce, "gasPrice": gas_price, "gas": gas,
                                       "to": _checksummed(normalize_address(to)), "value": value,
                                       "data": data, "chainId": chain_id}, secret)
    return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()


def _checksummed(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)   # eth-account's input form only; never sent on the RSK wire


def recover_sender(raw: bytes) -> str:
    """The lower-case account that signed a raw transaction."""
    from eth_account import Account

    try:
        return Account.recover_transaction(raw).lower()
    except Exception as e:  # noqa: BLE001
        raise InvalidRskData("not a signed transaction") from e


def recover_sender_public_key(raw: bytes) -> bytes:
    """The compressed public key that signed a legacy raw transaction: what the Bridge turns into
    a peg-out's BTC destination (rskj BridgeUtils.recoverBtcAddressFromEthTransaction: P2PKH of
    `getPubKey(true)`)."""
    import rlp
    from eth_keys import keys
    from eth_utils import keccak

    try:
        fields = rlp.decode(raw)
        if not isinstance(fields, list) or len(fields) != 9:
            raise ValueError("not the nine fields of a signed legacy transaction")
        v, r, s = (int.from_bytes(f, "big") for f in fields[6:])
        if v >= 35:
            chain_id = (v - 35) // 2
            unsigned, recovery = fields[:6] + [chain_id, b"", b""], v - 35 - 2 * chain_id
        else:
            unsigned, recovery = fields[:6], v - 27
        key = keys.Signature(vrs=(recovery, r, s)).recover_public_key_from_msg_hash(keccak(rlp.encode(unsigned)))
    except Exception as e:  # noqa: BLE001 - rlp and eth-keys raise several types for garbage
        raise InvalidRskData("not a signed legacy transaction") from e
    return key.to_compressed_bytes()
