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
from kaccy_bitcoin.application.monitor import PollPayments
from kaccy_bitcoin.application.orders import CreateOrder, ShowOrder, WatchRange
from kaccy_bitcoin.application.rebroadcast import MonitorTick, RebroadcastSettings, RebroadcastWithdrawals
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.application.fee_bumping import BumpWithdrawal, CpfpWithdrawal
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder, WithdrawalSettings
from kaccy_bitcoin.application.withdrawals import (
    BroadcastWithdrawal,
    CancelWithdrawal,
    CreateWithdrawal,
    ShowWithdrawal,
    SignWithdrawal,
)
from kaccy_bitcoin.adapters.bitcoin_core.signer import CoreWalletSigner
from kaccy_bitcoin.adapters.hwi.hardware_wallet import HwiHardwareWallet, HwiSigner
from kaccy_bitcoin.adapters.keys.software_signer import SoftwareSigner
from kaccy_bitcoin.ports.signer import SignerError
from kaccy_bitcoin.bootstrap.config import ConfigError
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
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


def _software_signer(mnemonic: str | None, passphrase: str, deriver: Bip32AddressDeriver) -> SoftwareSigner:
    if not mnemonic:
        raise SignerError("the software signer needs KACCY_SIGNER_MNEMONIC")
    return SoftwareSigner(mnemonic, passphrase or "", deriver)


def _fingerprint(configured: str | None, mnemonic: str | None, software_signer) -> str:  # noqa: ANN001
    """Master key fingerprint for PSBT key origins: configured, else the software signer's."""
    if configured:
        return configured.lower()
    if mnemonic:
        return software_signer().fingerprint
    return "00000000"


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
    software_signer = providers.Singleton(_software_signer, mnemonic=config.signer_mnemonic,
                                          passphrase=config.signer_passphrase, deriver=deriver)
    hardware_wallet = providers.Singleton(
        HwiHardwareWallet, network=providers.Callable(Network.parse, config.network),
        address_type=providers.Callable(lambda d: d.address_type, deriver))
    core_signer = providers.Singleton(CoreWalletSigner, rpc=rpc, wallet=config.signer_core_wallet,
                                      network=providers.Callable(Network.parse, config.network))
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
    rebroadcast_withdrawals = providers.Factory(
        RebroadcastWithdrawals, uow=storage.uow, chain=gateways.chain, clock=gateways.clock,
        publisher=gateways.publisher,
        settings=providers.Factory(RebroadcastSettings, network=providers.Callable(Network.parse, config.network),
                                   first_delay_seconds=config.rebroadcast_delay,
                                   stuck_after_seconds=config.stuck_after,
                                   unsigned_ttl_seconds=config.withdrawal_ttl))
    monitor_tick = providers.Factory(MonitorTick, poll=poll_payments, rebroadcast=rebroadcast_withdrawals)

    withdrawal_settings = providers.Singleton(
        WithdrawalSettings,
        network=providers.Callable(Network.parse, config.network),
        fallback_fee_rate=providers.Callable(FeeRate.from_sat_per_vb, config.fallback_fee_rate),
        fee_target_blocks=config.fee_target_blocks,
        master_fingerprint=providers.Callable(_fingerprint, config.xpub_fingerprint, config.signer_mnemonic,
                                              gateways.software_signer.provider),
    )
    withdrawal_builder = providers.Factory(WithdrawalBuilder, chain=gateways.chain, deriver=gateways.deriver,
                                           watch=watch_range, clock=gateways.clock, settings=withdrawal_settings)
    create_withdrawal = providers.Factory(CreateWithdrawal, builder=withdrawal_builder, uow=storage.uow,
                                          clock=gateways.clock)
    sign_withdrawal = providers.Factory(
        SignWithdrawal, uow=storage.uow, clock=gateways.clock,
        signers=providers.Dict(
            software=gateways.software_signer.provider,
            core=gateways.core_signer.provider,
            hwi=providers.Factory(HwiSigner, wallet=gateways.hardware_wallet,
                                  network=providers.Callable(Network.parse, config.network),
                                  fingerprint=withdrawal_settings.provided.master_fingerprint).provider))
    broadcast_withdrawal = providers.Factory(BroadcastWithdrawal, uow=storage.uow, chain=gateways.chain,
                                             clock=gateways.clock,
                                             network=providers.Callable(Network.parse, config.network))
    cancel_withdrawal = providers.Factory(CancelWithdrawal, uow=storage.uow, clock=gateways.clock)
    show_withdrawal = providers.Factory(ShowWithdrawal, uow=storage.uow, chain=gateways.chain)
    cpfp_withdrawal = providers.Factory(CpfpWithdrawal, builder=withdrawal_builder, uow=storage.uow,
                                        chain=gateways.chain, clock=gateways.clock)
    bump_withdrawal = providers.Factory(BumpWithdrawal, builder=withdrawal_builder, uow=storage.uow,
                                        clock=gateways.clock)


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
