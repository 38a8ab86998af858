"""The container wires the application from configuration; tests override providers with fakes."""
from __future__ import annotations

import pytest
from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory
from kaccy_bitcoin.bootstrap import config
from kaccy_bitcoin.bootstrap.container import build
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import Satoshis

WORDS = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"


def vpub() -> str:
    seed = Bip39SeedGenerator(WORDS).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()


def test_config_from_env_and_toml(tmp_path) -> None:
    toml = tmp_path / "kaccy.toml"
    toml.write_text('network = "testnet"\ngap_limit = 50\nconfirmations = "2,4,8"\n')
    values = config.load({"KACCY_CONFIG": str(toml), "KACCY_NETWORK": "signet", "KACCY_DATA_DIR": str(tmp_path)})
    assert values["network"] == "signet"          # the environment wins
    assert values["gap_limit"] == 50 and values["confirmations"] == "2,4,8"
    assert values["database_url"] == f"sqlite:///{tmp_path}/kaccy.db"
    toml.write_text('colour = "blue"\n')
    with pytest.raises(config.ConfigError, match="colour"):
        config.load({"KACCY_CONFIG": str(toml)})
    with pytest.raises(config.ConfigError, match="GAP_LIMIT"):
        config.load({"KACCY_GAP_LIMIT": "-3"})


async def test_real_wiring_builds_sql_storage(tmp_path) -> None:
    container = build(config.load({"KACCY_DATA_DIR": str(tmp_path), "KACCY_XPUB": vpub()}))
    assert isinstance(container.storage.uow(), SqlUnitOfWorkFactory)
    assert isinstance(container.gateways.deriver(), Bip32AddressDeriver)
    assert container.gateways.deriver() is container.gateways.deriver()


async def test_overrides_run_the_use_cases_on_fakes(tmp_path) -> None:
    container = build(config.load({"KACCY_DATA_DIR": str(tmp_path), "KACCY_XPUB": vpub()}))
    deriver = Bip32AddressDeriver(vpub(), Network.REGTEST)
    chain = FakeChain(lambda desc, end: deriver.addresses(0, 0, end + 1))
    clock, publisher, store = ManualClock(), RecordingPublisher(), MemoryUnitOfWorkFactory()
    container.gateways.chain.override(chain)
    container.gateways.clock.override(clock)
    container.gateways.publisher.override(publisher)
    container.storage.uow.override(store)

    order = await container.services.create_order()("o-1", Satoshis(20_000))
    chain.pay(order["address"], 20_000)
    chain.mine(3)
    await container.services.poll_payments()()
    view = await container.services.show_order()("o-1")
    assert (view.status, view.match, view.confirmations) == ("full_confirmed", "exact", 3)
    assert publisher.kinds() == ["payment_detected", "payment_confirmed", "payment_confirmed", "order_paid"]
    assert not (tmp_path / "kaccy.db").exists()  # the SQL engine was never built
    container.unwire()
    container.reset_override()


@pytest.mark.parametrize(("given", "refunds"), [("on", True), ("off", False), ("True", True), ("false", False)])
def test_swap_auto_refund_takes_on_off_and_what_serve_hands_its_workers(given: str, refunds: bool) -> None:
    """`serve --workers` hands its settings on as text: a switch comes back as True/False."""
    assert config.load({"KACCY_SWAP_AUTO_REFUND": given})["swap_auto_refund"] is refunds
    with pytest.raises(config.ConfigError):
        config.load({"KACCY_SWAP_AUTO_REFUND": "maybe"})
