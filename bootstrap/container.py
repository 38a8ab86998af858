"""The composition root: the only place that names concrete adapters.

Three containers by role (gateways to outside systems, storage, services) composed
in `Container`. Tests replace any provider: `container.gateways.chain.override(fake)`.
Nothing is built at import time; long-lived clients are Resources closed by
`shutdown_resources()`.
"""
from __future__ import annotations

from typing import AsyncIterator

from dependency_injector import containers, providers

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver, parse_address_type
from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.adapters.memory.clock import SystemClock
from kaccy_bitcoin.adapters.memory.publisher import InProcessPublisher, LogNotifier
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.monitor import PollPayments, RunMonitor
from kaccy_bitcoin.application.orders import CreateOrder, ShowOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.bootstrap.config import ConfigError
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds


async def _rpc_client(url: str | None, user: str | None, password: str | None,
                      cookie: str | None) -> AsyncIterator[BitcoinRpc]:
    if not url:
        raise ConfigError("KACCY_BITCOIN_RPC_URL is not set")
    if not cookie and not user:
        raise ConfigError("set KACCY_BITCOIN_RPC_USER and KACCY_BITCOIN_RPC_PASSWORD, or KACCY_BITCOIN_RPC_COOKIE")
    client = BitcoinRpc(url, user=user, password=password, cookie_file=cookie)
    try:
        yield client
    finally:
        await client.close()


def _deriver(xpub: str | None, network: str, address_type: str, fingerprint: str | None) -> Bip32AddressDeriver:
    if not xpub:
        raise ConfigError("KACCY_XPUB is not set (the account-level extended public key)")
    return Bip32AddressDeriver(xpub, Network.parse(network), parse_address_type(address_type), fingerprint)


def _subscribe_notifier(publisher: InProcessPublisher, notifier: LogNotifier) -> InProcessPublisher:
    async def discrepancies(event):  # noqa: ANN001, ANN202
        if event.is_discrepancy:
            await notifier.notify(event)

    publisher.subscribe(discrepancies)
    return publisher


class Gateways(containers.DeclarativeContainer):
    config = providers.Configuration()

    rpc = providers.Resource(_rpc_client, url=config.bitcoin_rpc_url, user=config.bitcoin_rpc_user,
                             password=config.bitcoin_rpc_password, cookie=config.bitcoin_rpc_cookie)
    chain = providers.Singleton(BitcoinCoreBackend, rpc=rpc, wallet=config.bitcoin_rpc_wallet)
    deriver = providers.Singleton(_deriver, xpub=config.xpub, network=config.network,
                                  address_type=config.address_type, fingerprint=config.xpub_fingerprint)
    clock = providers.Singleton(SystemClock)
    notifier = providers.Singleton(LogNotifier)
    publisher = providers.Singleton(lambda n: _subscribe_notifier(InProcessPublisher(), n), notifier)


class Storage(containers.DeclarativeContainer):
    config = providers.Configuration()

    engine = providers.Singleton(make_engine, url=config.database_url)
    uow = providers.Singleton(SqlUnitOfWorkFactory, engine=engine)


class Services(containers.DeclarativeContainer):
    config = providers.Configuration()
    gateways = providers.DependenciesContainer()
    storage = providers.DependenciesContainer()

    payment_settings = providers.Singleton(
        PaymentSettings,
        thresholds=providers.Callable(ConfirmationThresholds.parse, config.confirmations),
        tolerance=providers.Callable(Satoshis, config.tolerance_sat),
        gap_limit=config.gap_limit,
    )
    watch_range = providers.Factory(WatchRange, deriver=gateways.deriver, chain=gateways.chain,
                                    gap_limit=config.gap_limit)
    create_order = providers.Factory(CreateOrder, uow=storage.uow, deriver=gateways.deriver,
                                     watch=watch_range, clock=gateways.clock, settings=payment_settings)
    show_order = providers.Factory(ShowOrder, uow=storage.uow)
    poll_payments = providers.Factory(PollPayments, uow=storage.uow, chain=gateways.chain, clock=gateways.clock,
                                      publisher=gateways.publisher, settings=payment_settings)
    run_monitor = providers.Factory(RunMonitor, poll=poll_payments, interval=config.poll_interval)


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    gateways = providers.Container(Gateways, config=config)
    storage = providers.Container(Storage, config=config)
    services = providers.Container(Services, config=config, gateways=gateways, storage=storage)


def build(config: dict) -> Container:
    """A container configured from a dict (see `bootstrap.config.load`)."""
    container = Container()
    container.config.from_dict(config)
    return container
