"""`kaccy-bitcoin run`: the main job.

Without KACCY_BITCOIN_RPC_URL it starts the project's own regtest node in the data
dir, creates a demo account (regtest only) and walks a newcomer through an order
from creation to finality, then serves the API and keeps monitoring until Ctrl-C (`kaccy-bitcoin serve`). With
the RPC variables set it does the same against that node.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import sys
from typing import Any

import attrs
from bip_utils import Bip39MnemonicGenerator, Bip39SeedGenerator, Bip39WordsNum, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode, free_port
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.bootstrap.container import Container
from kaccy_bitcoin.bootstrap.serve import ServeOptions, serve
from kaccy_bitcoin.bootstrap.tuning import GcPausedDuring, freeze_startup_objects
from kaccy_bitcoin.domain.money import Satoshis


def say(text: str) -> None:
    print(f"kaccy-bitcoin | {text}", file=sys.stderr, flush=True)


def _demo_vpub(data_dir: pathlib.Path) -> str:
    """A regtest-only account whose words live in the data dir (never for real money)."""
    words_file = data_dir / "demo-account.words"
    if not words_file.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        words_file.write_text(str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12)) + "\n")
        os.chmod(words_file, 0o600)
    seed = Bip39SeedGenerator(words_file.read_text().strip()).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()


async def _funded_demo_wallet(rpc: BitcoinRpc) -> str:
    wallets = await rpc.call("listwallets")
    if "demo-payer" not in wallets:
        try:
            await rpc.call("loadwallet", "demo-payer")
        except Exception:  # noqa: BLE001 - first run: the wallet does not exist yet
            await rpc.call("createwallet", "demo-payer")
    balance = await rpc.call("getbalance", wallet="demo-payer")
    if balance < 1:
        address = await rpc.call("getnewaddress", wallet="demo-payer")
        # Mature coins, and past height 121: a wallet's anti-fee-sniping locktime may reach 100
        # blocks back, and Bitcoin Knots refuses one at height 21 (`parasite-cat21`).
        await rpc.call("generatetoaddress", 150, address)
    return await rpc.call("getnewaddress", wallet="demo-payer")


async def run_service(container: Container, options: ServeOptions | None = None, demo: bool = True) -> dict[str, Any]:
    config = container.config
    node = None
    if not config.bitcoin_rpc_url():
        if config.network() != "regtest":
            raise ValueError("without KACCY_BITCOIN_RPC_URL only a local regtest node can be started")
        data_dir = pathlib.Path(config.data_dir())
        node = RegtestNode(data_dir / "regtest-node", zmq_port=free_port())
        say(f"starting the project's regtest node in {node.datadir} (RPC {node.url})")
        node.start()
        config.bitcoin_rpc_url.from_value(node.url)
        config.bitcoin_rpc_user.from_value(node.user)
        config.bitcoin_rpc_password.from_value(node.password)
        if not config.xpub():
            config.xpub.from_value(_demo_vpub(data_dir))
            say("using the demo account in the data dir (regtest only)")
    try:
        if demo and config.network() == "regtest":
            poll = GcPausedDuring(await _awaited(container.services.monitor_tick()))
            await _demo(container, poll)
        options = options or ServeOptions()
        if options.api:   # ends with where the API and the dashboard are (a key made for it on regtest)
            key = (await _demo_admin_key(container, pathlib.Path(config.data_dir()))
                   if config.network() == "regtest" else None)
            options = attrs.evolve(options, on_listening=lambda url: _how_to_open(url, key))
        freeze_startup_objects()
        say(f"serving the API on {options.host}:{options.port}, monitoring every "
            f"{options.interval or config.poll_interval():g}s; Ctrl-C to stop")
        return await serve(container, options)
    finally:
        if node is not None:
            shutdown = container.shutdown_resources()
            if asyncio.iscoroutine(shutdown) or isinstance(shutdown, asyncio.Future):
                await shutdown
            say("stopping the regtest node")
            node.stop()


async def _demo_admin_key(container: Container, data_dir: pathlib.Path) -> str:
    """An admin API key for the demo (regtest only), kept in the data dir so every run shows the
    same one; made again when it is gone or was revoked."""
    key_file = data_dir / "demo-admin.key"
    authenticate = await _awaited(container.services.authenticate())
    if key_file.exists():
        secret = key_file.read_text().strip()
        known = authenticate(secret)
        if known is not None and "admin" in known.scopes:
            return secret
    created = (await _awaited(container.services.create_api_key()))(["admin"])
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(created["key"] + "\n")
    os.chmod(key_file, 0o600)
    return created["key"]


def _how_to_open(base_url: str, key: str | None) -> None:
    if key is None:
        say(f"the API: {base_url}/v1 (send 'Authorization: Bearer KEY'; `kaccy-bitcoin apikey create --scope admin` "
            "makes one)")
        say(f"the dashboard: open {base_url}/dashboard in a browser and give it an admin key")
        return
    say(f"the API: {base_url}/v1 (send 'Authorization: Bearer {key}', a demo admin key kept in the data dir)")
    say(f"the dashboard: open {base_url}/dashboard#key={key} in a browser")


async def _awaited(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future) else value


async def _demo(container: Container, poll: Any) -> None:
    rpc: BitcoinRpc = await _awaited(container.gateways.rpc())
    create = await _awaited(container.services.create_order())
    show = await _awaited(container.services.show_order())
    payer_address = await _funded_demo_wallet(rpc)
    await poll()  # catch up with whatever happened before
    order_id = f"demo-{os.getpid()}-{int(asyncio.get_running_loop().time())}"
    order = await create(order_id, Satoshis(125_000), label="demo coffee beans")
    say(f"1. order {order_id} created: pay {order['amount_sat']} sat to {order['address']}")
    say(f"   BIP21: {order['bip21']}")
    txid = await rpc.call("sendtoaddress", order["address"], Satoshis(125_000).to_btc(), wallet="demo-payer")
    say(f"2. the customer paid: txid {txid}")
    for step in range(7):
        for event in await poll():
            say(f"   event {event.kind}: {event.data}")
        view = await show(order_id)
        say(f"   status={view.status} match={view.match} confirmations={view.confirmations} "
            f"received={view.received_sat} sat")
        if view.status == "finalized":
            break
        await rpc.call("generatetoaddress", 1, payer_address)
        say(f"3.{step + 1} a block was mined")
    say("demo finished: the order walked pending -> unconfirmed -> confirmed -> full_confirmed -> finalized")
