"""sBTC scripts and calls: the deposit output and the withdrawal request.

A deposit is a P2TR output whose internal key is BIP341's NUMS point (no key path) and whose
tree holds two leaves, exactly as the sBTC protocol (github.com/stacks-network/sbtc,
sbtc/src/deposits.rs) and its `sbtc` JavaScript package build them:

    deposit:  <max_fee:8 BE ‖ recipient principal (Clarity)> OP_DROP <signers' x-only key> OP_CHECKSIG
    reclaim:  <lock_time> OP_CHECKSEQUENCEVERIFY OP_DROP <our x-only key> OP_CHECKSIG

A withdrawal is the contract call `sbtc-withdrawal.initiate-withdrawal-request (amount uint)
(recipient {version: (buff 1), hashbytes: (buff 32)}) (max-fee uint)`; the recipient is one of our
Bitcoin addresses in the contract's form (version 0x00 P2PKH … 0x06 P2TR, the hash or witness
program of its exact length). Scripts by python-bitcointx; nothing here does I/O.
"""
from __future__ import annotations

import attrs

from kaccy_bitcoin.domain.bitcoin import Address, AddressType, Network
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.stacks_codec import (
    Buffer, ContractPrincipal, StandardPrincipal, Tuple, UInt, principal, serialize)
from kaccy_bitcoin.domain.stacks_tx import ContractCall

# BIP341's "nothing up my sleeve" x coordinate: no private key is known for it.
NUMS_X_ONLY = bytes.fromhex("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")
# The `sbtc` reference package's defaults (packages/sbtc/src/transactions/deposit.ts).
DEFAULT_RECLAIM_LOCK_TIME = 950
DEFAULT_MAX_SIGNER_FEE = 80_000
# sbtc-withdrawal.clar: an amount must exceed this.
WITHDRAWAL_DUST_LIMIT = 546
SEQUENCE_LOCKTIME_DISABLE_FLAG = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG = 1 << 22
WITHDRAWAL_CONTRACT = "sbtc-withdrawal"
WITHDRAWAL_FUNCTION = "initiate-withdrawal-request"
SBTC_TOKEN_CONTRACT, SBTC_TOKEN_ASSET = "sbtc-token", "sbtc-token"
_RECIPIENT_VERSION = {AddressType.P2PKH: 0, AddressType.P2SH: 1, AddressType.P2WPKH: 4, AddressType.P2WSH: 5,
                      AddressType.P2TR: 6}


class InvalidSbtcRequest(DomainError):
    """An sBTC deposit or withdrawal whose terms cannot be (a key, lock time, fee or amount out of range)."""

    code = "invalid_sbtc_request"


def _x_only(key: bytes, whose: str) -> bytes:
    key = bytes(key)
    if len(key) == 33 and key[0] in (2, 3):
        key = key[1:]
    if len(key) != 32:
        raise InvalidSbtcRequest(f"{whose} key must be a 32-byte x-only (or 33-byte compressed) key")
    from bitcointx.core.key import XOnlyPubKey

    if not XOnlyPubKey(key).is_fullyvalid():
        raise InvalidSbtcRequest(f"{whose} key is not a point on secp256k1")
    return key


@attrs.frozen
class DepositScripts:
    deposit_script: bytes
    reclaim_script: bytes
    script_pubkey: bytes
    merkle_root: bytes

    def address(self, network: Network) -> str:
        from bitcointx import ChainParams
        from bitcointx.wallet import CCoinAddress

        with ChainParams(network.chain_params):
            return str(CCoinAddress.from_scriptPubKey(_cscript(self.script_pubkey)))


def _cscript(data: bytes):  # noqa: ANN202 - bitcointx's CScript
    from bitcointx.core.script import CScript

    return CScript(data)


def deposit_script(signers_key: bytes, recipient: StandardPrincipal | ContractPrincipal | str, max_fee: int) -> bytes:
    from bitcointx.core.script import OP_CHECKSIG, OP_DROP, CScript

    if isinstance(recipient, str):
        recipient = principal(recipient)
    if isinstance(max_fee, bool) or not isinstance(max_fee, int) or not 0 <= max_fee < 1 << 64:
        raise InvalidSbtcRequest(f"max fee must be an integer number of sats, not {max_fee!r}")
    data = max_fee.to_bytes(8, "big") + serialize(recipient)
    return bytes(CScript([data, OP_DROP, _x_only(signers_key, "the signers'"), OP_CHECKSIG]))


def reclaim_script(reclaim_key: bytes, lock_time: int) -> bytes:
    """`<lock_time> OP_CSV OP_DROP <key> OP_CHECKSIG`; a block-based relative lock time only (as the
    signers accept it): 1..65535, no disable or time flag."""
    from bitcointx.core.script import OP_CHECKSEQUENCEVERIFY, OP_CHECKSIG, OP_DROP, CScript

    if isinstance(lock_time, bool) or not isinstance(lock_time, int) or not 1 <= lock_time <= 0xFFFF:
        raise InvalidSbtcRequest(f"reclaim lock time must be 1..65535 blocks, not {lock_time!r}")
    return bytes(CScript([lock_time, OP_CHECKSEQUENCEVERIFY, OP_DROP, _x_only(reclaim_key, "the reclaim"),
                          OP_CHECKSIG]))


def deposit_output(deposit: bytes, reclaim: bytes) -> DepositScripts:
    """The P2TR output of the two leaves under the NUMS internal key."""
    from bitcointx.core.key import XOnlyPubKey
    from bitcointx.core.script import TaprootScriptTree
    from bitcointx.wallet import P2TRCoinAddress

    tree = TaprootScriptTree([_cscript(deposit), _cscript(reclaim)], internal_pubkey=XOnlyPubKey(NUMS_X_ONLY))
    spk = bytes(P2TRCoinAddress.from_script_tree(tree).to_scriptPubKey())
    return DepositScripts(bytes(deposit), bytes(reclaim), spk, bytes(tree.merkle_root))


def build_deposit(signers_key: bytes, recipient: StandardPrincipal | ContractPrincipal | str, max_fee: int,
                  reclaim_key: bytes, lock_time: int = DEFAULT_RECLAIM_LOCK_TIME) -> DepositScripts:
    return deposit_output(deposit_script(signers_key, recipient, max_fee), reclaim_script(reclaim_key, lock_time))


def reclaim_leaf(scripts: DepositScripts):  # noqa: ANN201 - (script, control block) for the witness
    """The reclaim leaf's script and control block, to spend it after the CSV delay."""
    from bitcointx.core.key import XOnlyPubKey
    from bitcointx.core.script import TaprootScriptTree

    from bitcointx.core.script import CScript

    tree = TaprootScriptTree([CScript(scripts.deposit_script, name="deposit"),
                              CScript(scripts.reclaim_script, name="reclaim")],
                             internal_pubkey=XOnlyPubKey(NUMS_X_ONLY))
    script, control_block = tree.get_script_with_control_block("reclaim")
    return bytes(script), bytes(control_block)


def withdrawal_recipient(address: Address) -> Tuple:
    """`{version: (buff 1), hashbytes: (buff 20|32)}` for a Bitcoin address (sbtc-withdrawal.clar)."""
    from bitcointx.core.script import CScript

    spk = CScript(address.script_pubkey())
    if address.type is AddressType.P2PKH:
        hashbytes = bytes(spk[3:23])
    elif address.type is AddressType.P2SH:
        hashbytes = bytes(spk[2:22])
    else:
        hashbytes = bytes(spk[2:])   # the witness program: 20 (P2WPKH) or 32 (P2WSH, P2TR) bytes
    return Tuple({"version": Buffer(bytes([_RECIPIENT_VERSION[address.type]])), "hashbytes": Buffer(hashbytes)})


def withdrawal_call(deployer: StandardPrincipal | str, amount: int, recipient: Address, max_fee: int) -> ContractCall:
    if isinstance(deployer, str):
        deployer = StandardPrincipal.from_address(deployer)
    for name, value in (("amount", amount), ("max fee", max_fee)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidSbtcRequest(f"{name} must be a non-negative integer number of sats, not {value!r}")
    if amount <= WITHDRAWAL_DUST_LIMIT:
        raise InvalidSbtcRequest(f"an sBTC withdrawal must exceed {WITHDRAWAL_DUST_LIMIT} sat, not {amount}")
    return ContractCall(ContractPrincipal(deployer, WITHDRAWAL_CONTRACT), WITHDRAWAL_FUNCTION,
                        [UInt(amount), withdrawal_recipient(recipient), UInt(max_fee)])


def withdrawal_post_condition(deployer: StandardPrincipal | str, amount: int, max_fee: int):  # noqa: ANN201
    """Deny mode's one allowance: the sender gives up exactly amount + max fee of sBTC (the contract
    locks both)."""
    from kaccy_bitcoin.domain.stacks_tx import EQ, AssetInfo, FungiblePostCondition

    if isinstance(deployer, str):
        deployer = StandardPrincipal.from_address(deployer)
    asset = AssetInfo(ContractPrincipal(deployer, SBTC_TOKEN_CONTRACT), SBTC_TOKEN_ASSET)
    return FungiblePostCondition(None, asset, EQ, amount + max_fee)


def signers_key_from_read_only(result: str) -> bytes:
    """The signers' 32-byte x-only key from `get-current-aggregate-pubkey`'s Clarity result (a
    33-byte compressed key in a buffer; `0x`-hex as the node's call-read answers it)."""
    from kaccy_bitcoin.domain.stacks_codec import deserialize

    value = deserialize(result)
    if not isinstance(value, Buffer) or len(value.value) != 33 or value.value[0] not in (2, 3):
        raise InvalidSbtcRequest("get-current-aggregate-pubkey did not answer a 33-byte compressed key")
    return _x_only(value.value, "the signers'")


def withdrawal_transaction(secret: bytes, *, mainnet: bool, nonce: int, fee: int, deployer: StandardPrincipal | str,
                           amount: int, recipient: Address, max_fee: int):  # noqa: ANN201 - StacksTransaction
    """The signed peg-out: the withdrawal contract call, post-condition mode deny with the one
    fungible post-condition on the sBTC it takes, anchor mode any, single-sig P2PKH (`secret`'s key)."""
    from coincurve import PrivateKey

    from kaccy_bitcoin.domain.stacks_codec import hash160
    from kaccy_bitcoin.domain.stacks_tx import SingleSigCondition, StacksTransaction, network_params

    for name, value in (("nonce", nonce), ("fee", fee)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise InvalidSbtcRequest(f"{name} must be an unsigned 64-bit integer, not {value!r}")
    version, chain_id = network_params(mainnet)
    signer = hash160(PrivateKey(secret).public_key.format(compressed=True))
    tx = StacksTransaction(version, chain_id, SingleSigCondition(signer, nonce, fee),
                           withdrawal_call(deployer, amount, recipient, max_fee),
                           [withdrawal_post_condition(deployer, amount, max_fee)])
    return tx.sign(secret)
