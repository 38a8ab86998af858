"""Layer-2 pegs (docs/l2.md): what exists so far is our accounts on each L2."""
from __future__ import annotations

from typing import Any, Callable

from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.domain.errors import SignerRequired
from kaccy_bitcoin.ports.l2_keys import L2Keys


async def l2_keys(keys: Callable[[], Any]) -> L2Keys:
    found = await resolved(keys())
    if found is None:
        raise SignerRequired("the L2 accounts derive from the software signer's seed: set KACCY_SIGNER_MNEMONIC")
    return found


class ShowPegAccounts:
    """`peg accounts`: our Stacks address and our RSK address with its BTC refund address."""

    def __init__(self, keys: Callable[[], Any]) -> None:
        self._keys = keys

    async def __call__(self) -> dict[str, Any]:
        return (await l2_keys(self._keys)).accounts().view()
