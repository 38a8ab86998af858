"""One regtest bitcoind per test session (temporary datadir, free ports), a fresh wallet per test."""
from __future__ import annotations

import itertools
import uuid
from typing import Any, AsyncIterator, Iterator

import pytest
from bip_utils import Bip39MnemonicGenerator, Bip39SeedGenerator, Bip39WordsNum, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode, free_port
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc

_names = itertools.count(1)
FIRST_BLOCKS = 150   # see Node.setup


@pytest.fixture(scope="session")
def regtest_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegtestNode]:
    # Publishing ZMQ notifications: a continuous `monitor` polls at once when one arrives.
    node = RegtestNode(tmp_path_factory.mktemp("bitcoind"), zmq_port=free_port())
    node.start()
    yield node
    node.stop()


class Node:
    """Test-side control of the regtest node: a funded miner wallet, mining, fresh wallets."""

    def __init__(self, node: RegtestNode, rpc: BitcoinRpc) -> None:
        self.node = node
        self.rpc = rpc
        self.miner_address = ""

    async def setup(self) -> None:
        await self.rpc.call("createwallet", "miner")
        self.miner_address = await self.rpc.call("getnewaddress", wallet="miner")
        # Past height 121: a wallet's anti-fee-sniping locktime is the tip, or now and then up to
        # 100 blocks earlier, and Bitcoin Knots refuses a transaction locked at height 21 as a
        # CAT-21 "parasite" (reject reason `parasite-cat21`). Below 122 blocks about one send in a
        # thousand would stay out of the mempool (and out of every block) for good.
        await self.mine(FIRST_BLOCKS)

    async def mine(self, blocks: int = 1) -> list[str]:
        hashes = await self.rpc.call("generatetoaddress", blocks, self.miner_address)
        await self.settle()
        return hashes

    async def settle(self) -> None:
        """Wait until every wallet (ours included) has processed what the node just did:
        the node notifies wallets asynchronously, so a poll right after a send could miss it."""
        await self.rpc.call("syncwithvalidationinterfacequeue")

    async def call(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        return await self.rpc.call(method, *params, wallet=wallet)

    async def send(self, address: str, sat: int, *, wallet: str = "miner", replaceable: bool = True) -> str:
        from kaccy_bitcoin.domain.money import Satoshis

        txid = await self.rpc.call("sendtoaddress", address, Satoshis(sat).to_btc(), "", "", False, replaceable,
                                   wallet=wallet)
        await self.settle()
        await self.in_mempool(txid, wallet)
        return txid

    async def in_mempool(self, txid: str, wallet: str) -> None:
        """A wallet keeps (and `sendtoaddress` answers) a transaction its node's mempool refused,
        to broadcast it later: a payment a test thinks it made would then never reach a block.
        Say so here, with the mempool's reason, instead of as a payment the monitor missed."""
        (entry,) = await self.rpc.batch([("getmempoolentry", [txid])])   # an RpcError when not there
        if isinstance(entry, dict):
            return
        raw = (await self.rpc.call("gettransaction", txid, wallet=wallet))["hex"]
        (verdict,) = await self.rpc.call("testmempoolaccept", [raw])
        raise AssertionError(f"{wallet} sent {txid} but the mempool does not hold it: {verdict}")

    async def fresh_wallet(self, funded_sat: int = 0) -> str:
        name = f"w{next(_names)}-{uuid.uuid4().hex[:6]}"
        await self.rpc.call("createwallet", name)
        if funded_sat:
            address = await self.rpc.call("getnewaddress", wallet=name)
            await self.send(address, funded_sat)
            await self.mine(1)
        return name

    def fresh_vpub(self) -> tuple[str, str]:
        """A new random BIP84 regtest account: (mnemonic, vpub)."""
        words = str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12))
        seed = Bip39SeedGenerator(words).Generate()
        account = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0)
        return words, account.PublicKey().ToExtended()

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for running the CLI against this node."""
        return {"KACCY_NETWORK": "regtest", "KACCY_BITCOIN_RPC_URL": self.node.url,
                "KACCY_BITCOIN_RPC_USER": self.node.user, "KACCY_BITCOIN_RPC_PASSWORD": self.node.password,
                **extra}


@pytest.fixture(scope="session")
async def node(regtest_node: RegtestNode) -> AsyncIterator[Node]:
    rpc = BitcoinRpc(regtest_node.url, user=regtest_node.user, password=regtest_node.password)
    helper = Node(regtest_node, rpc)
    await helper.setup()
    yield helper
    await rpc.close()
