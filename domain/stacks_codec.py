"""Stacks encodings: c32 and c32check (addresses), and Clarity values (SIP-005 wire format).

c32 is Crockford's base-32 read as one big-endian number, with one leading `0` per leading
zero byte, as the c32check reference implementation writes it; c32check appends the first four
bytes of SHA-256d(version ‖ data) and prefixes the version's own c32 digit; an address is `S`
followed by that, for a 20-byte hash160 (version 22 `SP` and 20 `SM` mainnet, 26 `ST` and 21 `SN`
the test networks).

Clarity values are frozen records (`UInt`, `Int`, `Buffer`, `Bool`, `StandardPrincipal`,
`ContractPrincipal`, `Ok`/`Err`, `Some`/`NONE`, `ListCV`, `Tuple`, `StringAscii`, `StringUtf8`);
`serialize` and `deserialize` map them to and from SIP-005 bytes.
"""
from __future__ import annotations

import hashlib
import re
from typing import Union

import attrs

from kaccy_bitcoin.domain.errors import DomainError

C32_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

MAINNET_P2PKH, MAINNET_P2SH, TESTNET_P2PKH, TESTNET_P2SH = 22, 20, 26, 21
CONTRACT_NAME = re.compile(r"^[a-zA-Z]([a-zA-Z0-9]|[-_])*$")


class InvalidStacksEncoding(DomainError):
    """Bytes or text that are not what a Stacks encoding allows (bad c32, checksum, Clarity type)."""

    code = "invalid_stacks_encoding"


# --- c32 ---------------------------------------------------------------------------------------

def c32_encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 32)
        digits.append(C32_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "0" * zeros + "".join(reversed(digits))


def _c32_normalize(text: str) -> str:
    return text.upper().replace("O", "0").replace("L", "1").replace("I", "1")


def c32_decode(text: str) -> bytes:
    text = _c32_normalize(text)
    if any(ch not in C32_ALPHABET for ch in text):
        raise InvalidStacksEncoding(f"not a c32 string: {text!r}")
    number = 0
    for ch in text:
        number = number * 32 + C32_ALPHABET.index(ch)
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    zeros = len(text) - len(text.lstrip("0"))
    return b"\0" * zeros + body


def _checksum(version: int, data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(bytes([version]) + data).digest()).digest()[:4]


def c32check_encode(version: int, data: bytes) -> str:
    if not 0 <= version < 32:
        raise InvalidStacksEncoding(f"c32check version {version} is not in 0..31")
    return C32_ALPHABET[version] + c32_encode(data + _checksum(version, data))


def c32check_decode(text: str) -> tuple[int, bytes]:
    text = _c32_normalize(text)
    if len(text) < 2 or text[0] not in C32_ALPHABET:
        raise InvalidStacksEncoding(f"not a c32check string: {text!r}")
    version = C32_ALPHABET.index(text[0])
    raw = c32_decode(text[1:])
    if len(raw) < 4:
        raise InvalidStacksEncoding(f"c32check string too short: {text!r}")
    data, checksum = raw[:-4], raw[-4:]
    if _checksum(version, data) != checksum:
        raise InvalidStacksEncoding(f"c32check checksum mismatch in {text!r}")
    return version, data


def c32_address(version: int, hash160: bytes) -> str:
    if len(hash160) != 20:
        raise InvalidStacksEncoding("a Stacks address holds a 20-byte hash160")
    return "S" + c32check_encode(version, hash160)


def c32_address_decode(address: str) -> tuple[int, bytes]:
    if len(address) <= 5 or address[0] != "S":
        raise InvalidStacksEncoding(f"not a Stacks address: {address!r}")
    version, data = c32check_decode(address[1:])
    if len(data) != 20:
        raise InvalidStacksEncoding(f"a Stacks address holds a 20-byte hash160: {address!r}")
    return version, data


def hash160(data: bytes) -> bytes:
    from bitcointx.core import Hash160

    return bytes(Hash160(data))


def p2pkh_address(public_key: bytes, mainnet: bool) -> str:
    """The single-sig address of a compressed secp256k1 key (`SP…` mainnet, `ST…` otherwise)."""
    if len(public_key) != 33 or public_key[0] not in (2, 3):
        raise InvalidStacksEncoding("a Stacks single-sig address needs a compressed public key")
    return c32_address(MAINNET_P2PKH if mainnet else TESTNET_P2PKH, hash160(public_key))


# --- Clarity values (SIP-005) --------------------------------------------------------------------

_U128, _I128 = 1 << 128, 1 << 127


@attrs.frozen
class Int:
    value: int = attrs.field()

    @value.validator
    def _range(self, _a: object, v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not -_I128 <= v < _I128:
            raise InvalidStacksEncoding(f"not a Clarity int (signed 128-bit): {v!r}")


@attrs.frozen
class UInt:
    value: int = attrs.field()

    @value.validator
    def _range(self, _a: object, v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < _U128:
            raise InvalidStacksEncoding(f"not a Clarity uint (unsigned 128-bit): {v!r}")


@attrs.frozen
class Buffer:
    value: bytes = attrs.field(converter=bytes)


@attrs.frozen
class Bool:
    value: bool


@attrs.frozen
class StandardPrincipal:
    version: int = attrs.field()
    hash160: bytes = attrs.field(converter=bytes)

    @version.validator
    def _check(self, _a: object, v: int) -> None:
        if not 0 <= v < 32 or len(self.hash160) != 20:
            raise InvalidStacksEncoding("a standard principal is a version 0..31 and a 20-byte hash160")

    @classmethod
    def from_address(cls, address: str) -> StandardPrincipal:
        return cls(*c32_address_decode(address))

    @property
    def address(self) -> str:
        return c32_address(self.version, self.hash160)


@attrs.frozen
class ContractPrincipal:
    issuer: StandardPrincipal
    name: str = attrs.field()

    @name.validator
    def _check(self, _a: object, v: str) -> None:
        if not 1 <= len(v) <= 128 or not CONTRACT_NAME.match(v):
            raise InvalidStacksEncoding(f"not a contract name: {v!r}")

    @classmethod
    def parse(cls, text: str) -> ContractPrincipal:
        address, _, name = text.partition(".")
        return cls(StandardPrincipal.from_address(address), name)

    def __str__(self) -> str:
        return f"{self.issuer.address}.{self.name}"


@attrs.frozen
class Ok:
    value: ClarityValue


@attrs.frozen
class Err:
    value: ClarityValue


@attrs.frozen
class Some:
    value: ClarityValue


@attrs.frozen
class NoneCV:
    pass


NONE = NoneCV()


@attrs.frozen
class ListCV:
    items: tuple = attrs.field(converter=tuple)


@attrs.frozen
class Tuple:
    """A Clarity tuple; its fields serialize sorted by name, as the consensus format requires."""

    fields: dict = attrs.field(converter=dict, hash=False)

    @fields.validator
    def _check(self, _a: object, v: dict) -> None:
        for name in v:
            if not 1 <= len(name) <= 128 or not re.match(r"^[a-zA-Z]([a-zA-Z0-9]|[-_!?+<>=/*])*$", name):
                raise InvalidStacksEncoding(f"not a Clarity tuple field name: {name!r}")


@attrs.frozen
class StringAscii:
    value: str = attrs.field()

    @value.validator
    def _check(self, _a: object, v: str) -> None:
        if not v.isascii():
            raise InvalidStacksEncoding("a string-ascii holds ASCII only")


@attrs.frozen
class StringUtf8:
    value: str


ClarityValue = Union[Int, UInt, Buffer, Bool, StandardPrincipal, ContractPrincipal, Ok, Err, Some, NoneCV, ListCV,
                     Tuple, StringAscii, StringUtf8]


def principal(text: str) -> StandardPrincipal | ContractPrincipal:
    """`SP…` or `SP….contract-name`."""
    return ContractPrincipal.parse(text) if "." in text else StandardPrincipal.from_address(text)


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def serialize_principal_body(p: StandardPrincipal) -> bytes:
    return bytes([p.version]) + p.hash160


def serialize(value: ClarityValue) -> bytes:
    if isinstance(value, Int):
        return b"\x00" + (value.value % _U128).to_bytes(16, "big")
    if isinstance(value, UInt):
        return b"\x01" + value.value.to_bytes(16, "big")
    if isinstance(value, Buffer):
        return b"\x02" + _u32(len(value.value)) + value.value
    if isinstance(value, Bool):
        return b"\x03" if value.value else b"\x04"
    if isinstance(value, StandardPrincipal):
        return b"\x05" + serialize_principal_body(value)
    if isinstance(value, ContractPrincipal):
        name = value.name.encode()
        return b"\x06" + serialize_principal_body(value.issuer) + bytes([len(name)]) + name
    if isinstance(value, (Ok, Err, Some)):
        return {Ok: b"\x07", Err: b"\x08", Some: b"\x0a"}[type(value)] + serialize(value.value)
    if isinstance(value, NoneCV):
        return b"\x09"
    if isinstance(value, ListCV):
        return b"\x0b" + _u32(len(value.items)) + b"".join(serialize(v) for v in value.items)
    if isinstance(value, Tuple):
        out = [b"\x0c", _u32(len(value.fields))]
        for name in sorted(value.fields):
            out += [bytes([len(name)]), name.encode(), serialize(value.fields[name])]
        return b"".join(out)
    if isinstance(value, StringAscii):
        return b"\x0d" + _u32(len(value.value)) + value.value.encode("ascii")
    if isinstance(value, StringUtf8):
        data = value.value.encode()
        return b"\x0e" + _u32(len(data)) + data
    raise InvalidStacksEncoding(f"not a Clarity value: {value!r}")


class Reader:
    """Bytes read front to back; running out is an InvalidStacksEncoding."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = bytes(data), 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidStacksEncoding("truncated Stacks encoding")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise InvalidStacksEncoding(f"{len(self.data) - self.pos} trailing bytes")


def read_standard_principal(r: Reader) -> StandardPrincipal:
    return StandardPrincipal(r.byte(), r.take(20))


def read_name(r: Reader) -> str:
    try:
        return r.take(r.byte()).decode("ascii")
    except UnicodeDecodeError as e:
        raise InvalidStacksEncoding("a Clarity name is ASCII") from e


def read_value(r: Reader, depth: int = 0) -> ClarityValue:
    if depth > 64:
        raise InvalidStacksEncoding("Clarity value nested too deeply")
    tag = r.byte()
    if tag in (0, 1):
        raw = int.from_bytes(r.take(16), "big")
        return UInt(raw) if tag else Int(raw - _U128 if raw >= _I128 else raw)
    if tag == 2:
        return Buffer(r.take(r.u32()))
    if tag in (3, 4):
        return Bool(tag == 3)
    if tag == 5:
        return read_standard_principal(r)
    if tag == 6:
        return ContractPrincipal(read_standard_principal(r), read_name(r))
    if tag in (7, 8, 10):
        return {7: Ok, 8: Err, 10: Some}[tag](read_value(r, depth + 1))
    if tag == 9:
        return NONE
    if tag == 11:
        return ListCV(read_value(r, depth + 1) for _ in range(r.u32()))
    if tag == 12:
        fields = {}
        for _ in range(r.u32()):
            name = read_name(r)
            fields[name] = read_value(r, depth + 1)
        return Tuple(fields)
    if tag in (13, 14):
        data = r.take(r.u32())
        try:
            return StringAscii(data.decode("ascii")) if tag == 13 else StringUtf8(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InvalidStacksEncoding("a Clarity string that does not decode") from e
    raise InvalidStacksEncoding(f"unknown Clarity type prefix 0x{tag:02x}")


def deserialize(data: bytes) -> ClarityValue:
    """One Clarity value filling `data` exactly (a `0x` hex string from the node is also taken)."""
    if isinstance(data, str):
        text = data[2:] if data.startswith("0x") else data
        try:
            data = bytes.fromhex(text)
        except ValueError as e:
            raise InvalidStacksEncoding("a Clarity value in hex that is not hex") from e
    r = Reader(data)
    value = read_value(r)
    r.done()
    return value
