"""`custody status`: each custody tier's balance against its target share, and the move
(a withdrawal proposal) that would restore the hot tier's share (see domain/custody.py)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.application.wallets import WalletDirectory, balances
from kaccy_bitcoin.domain.custody import CustodyPolicy, InvalidCustodyConfig
from kaccy_bitcoin.domain.wallets import UnknownWallet
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend


class CustodyStatus:
    def __init__(self, wallets: WalletDirectory, chain: ChainBackend, policy: CustodyPolicy) -> None:
        self._wallets, self._chain, self._policy = wallets, chain, policy

    async def __call__(self) -> dict[str, Any]:
        if not self._policy.tiers:
            raise InvalidCustodyConfig("no custody tiers: set KACCY_CUSTODY_TIERS, e.g. "
                                       "hot=default:2000000,warm=treasury:50000000,cold=vault")
        opened = []
        for tier in self._policy.tiers:
            try:
                opened.append(self._wallets.get(tier.wallet))
            except UnknownWallet:
                pass    # a tier whose wallet is not added yet holds nothing
        found = balances(opened, await self._chain.unspent(0))
        status = self._policy.status({name: b["confirmed_sat"] + b["unconfirmed_sat"] for name, b in found.items()})
        for row in status["tiers"]:
            row["wallet_known"] = row["wallet"] in found
        return status
