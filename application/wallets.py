"""Named wallets: add a multisig wallet, list wallets with their balances, and the directory
that opens any wallet (its deriver and watch range) for the other use cases.

One watch-only node wallet (KACCY_BITCOIN_RPC_WALLET) holds the descriptors of every kaccy
wallet. Coins are told apart by their key: the node reports each coin's derivation
(chain/index) and a coin belongs to the wallet whose address at that chain/index is the
coin's address. So the payment monitor and the withdrawal tracker, which read the node
wallet's history by address and txid, see every wallet without knowing of wallets, while
coin selection, reservations and change stay per wallet (a builder for wallet W picks only
W's coins, and W's change comes from W's own change chain in the address book).
"""
from __future__ import annotations

from typing import Any, Callable

import attrs

from kaccy_bitcoin.application.orders import WatchRange
from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.domain.addresses import AddressEntry
from kaccy_bitcoin.domain.bitcoin import AddressType, Network
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.wallets import DEFAULT, CosignerKey, UnknownWallet, Wallet, WalletExists, check_name
from kaccy_bitcoin.domain.withdrawals import Utxo
from kaccy_bitcoin.ports.addresses import CHANGE, RECEIVE, AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

DEFAULT_WALLET = Wallet(DEFAULT, 0)


@attrs.define
class OpenWallet:
    """A wallet with what deriving and watching its addresses takes (one per process)."""

    wallet: Wallet
    deriver: AddressDeriver
    watch: WatchRange

    @property
    def name(self) -> str:
        return self.wallet.name

    def book_chain(self, chain: int) -> int:
        return self.wallet.book_chain(chain)

    def owns(self, u: Utxo) -> bool:
        """Whether the coin is at this wallet's address for the key path the node reports."""
        return u.chain is not None and u.index is not None and u.chain in (RECEIVE, CHANGE) \
            and self.deriver.address(u.chain, u.index) == u.address

    def policy(self) -> str:
        kind = self.deriver.address_type
        return self.wallet.policy("p2sh-p2wpkh" if kind is AddressType.P2SH else kind.value)


class WalletDirectory:
    """Opens wallets by name or by their address-book number; `default` is KACCY_XPUB's."""

    def __init__(self, uow: UnitOfWorkFactory, default_deriver: AddressDeriver, default_watch: WatchRange,
                 multisig_deriver: Callable[[Wallet], AddressDeriver], chain: ChainBackend, gap_limit: int) -> None:
        self._uow = uow
        self._default_deriver, self._default_watch = default_deriver, default_watch
        self._multisig = multisig_deriver
        self._chain, self._gap = chain, gap_limit
        self._open: dict[str, OpenWallet] = {}

    def open(self, wallet: Wallet) -> OpenWallet:
        found = self._open.get(wallet.name)
        if found is None:
            if wallet.name == DEFAULT:
                found = OpenWallet(DEFAULT_WALLET, self._default_deriver, self._default_watch)
            else:
                deriver = self._multisig(wallet)
                found = OpenWallet(wallet, deriver, WatchRange(deriver, self._chain, self._gap))
            self._open[wallet.name] = found
        return found

    def get(self, name: str | None) -> OpenWallet:
        name = name or DEFAULT
        if name == DEFAULT or name in self._open:
            return self.open(DEFAULT_WALLET if name == DEFAULT else self._open[name].wallet)
        check_name(name)
        with self._uow.read() as uow:
            wallet = uow.wallets.get(name)
        if wallet is None:
            raise UnknownWallet(f"no wallet named {name!r} (see `kaccy-bitcoin wallet list`)")
        return self.open(wallet)

    def all(self) -> list[OpenWallet]:
        with self._uow.read() as uow:
            stored = uow.wallets.all()
        return [self.open(DEFAULT_WALLET), *(self.open(w) for w in stored)]


class AddWallet:
    """Record an M-of-N P2WSH wallet and make the node watch its first addresses. Adding the
    same definition again answers the same; another definition under a taken name is refused."""

    def __init__(self, uow: UnitOfWorkFactory, wallets: WalletDirectory, clock: Clock, network: Network) -> None:
        self._uow, self._wallets, self._clock, self._network = uow, wallets, clock, network

    async def __call__(self, name: str, threshold: int, keys: list[str]) -> dict[str, Any]:
        parsed = [CosignerKey.parse(k, self._network) for k in keys]

        async def attempt() -> Wallet:
            async with self._uow() as uow:
                wallet = Wallet.multisig(name, uow.wallets.next_number(), threshold, parsed, self._clock.now())
                existing = uow.wallets.get(name)
                twin = uow.wallets.by_definition(wallet.definition())
                if existing is None and twin is None:
                    uow.wallets.add(wallet)
                    uow.commit()
                    return wallet
            if existing is not None and existing.same_definition(wallet):
                return existing
            if existing is not None:
                raise WalletExists(f"a wallet named {name!r} exists with other keys or another threshold")
            raise WalletExists(f"wallet {twin.name!r} has the same keys and threshold (every address would be "
                               "the same): use that one")

        wallet = await retried(attempt, on=ConcurrentUpdate, why="another wallet was added at the same time")
        opened = self._wallets.open(wallet)
        for chain in (RECEIVE, CHANGE):   # its gap range, before any address of it is handed out
            await opened.watch.cover(chain, 1)
        return {"wallet": wallet.name, "receive_descriptor": opened.deriver.descriptor(RECEIVE),
                "change_descriptor": opened.deriver.descriptor(CHANGE),
                "first_address": opened.deriver.address(RECEIVE, 0)}


class TransferAddress:
    """A fresh receive address of a wallet, for moving coins to it from another wallet of ours
    (`withdraw create --to-wallet`): recorded in the address book, so the monitor counts the
    payment as ours, and watched by the node before it is returned."""

    def __init__(self, uow: UnitOfWorkFactory, wallets: WalletDirectory) -> None:
        self._uow, self._wallets = uow, wallets

    async def __call__(self, wallet: str, label: str) -> str:
        opened = self._wallets.get(wallet)
        async with self._uow() as uow:
            index = uow.addresses.allocate(opened.book_chain(RECEIVE))
            address = opened.deriver.address(RECEIVE, index)
            uow.addresses.record(AddressEntry(address, opened.book_chain(RECEIVE), index, label, None, "transfer"))
            uow.commit()
        await opened.watch.cover(RECEIVE, index + 1)
        return address


def balances(wallets: list[OpenWallet], utxos: list[Utxo]) -> dict[str, dict[str, int]]:
    """Each wallet's confirmed and unconfirmed sat and coin count, each coin counted once."""
    out = {w.name: {"confirmed_sat": 0, "unconfirmed_sat": 0, "utxo_count": 0} for w in wallets}
    for u in utxos:
        owner = next((w for w in wallets if w.owns(u)), None)
        if owner is None:
            continue
        row = out[owner.name]
        row["confirmed_sat" if u.confirmations > 0 else "unconfirmed_sat"] += u.amount.value
        row["utxo_count"] += 1
    return out


class ListWallets:
    def __init__(self, wallets: WalletDirectory, chain: ChainBackend) -> None:
        self._wallets, self._chain = wallets, chain

    async def __call__(self) -> dict[str, Any]:
        wallets = self._wallets.all()
        found = balances(wallets, await self._chain.unspent(0))
        return {"wallets": [{"wallet": w.name, "policy": w.policy(), **found[w.name]} for w in wallets]}
