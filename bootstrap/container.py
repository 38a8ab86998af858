"""The composition root: the only place that names concrete adapters.

Three containers by role (gateways to outside systems, storage, services) composed
in `Container`. Tests replace any provider: `container.gateways.chain.override(fake)`.
Nothing is built at import time; long-lived clients are Resources closed by
`shutdown_resources()`.

Nor is anything imported that a command may not use: each adapter and use case below is
a `_Lazy` stand-in that imports its module when its provider first builds one, so
`order show` loads the SQL storage and the domain, not aiohttp, hwilib or bip-utils
(bench/startup.py measures it, tests/test_startup_imports.py keeps it so).
"""
from __future__ import annotations

import _thread
import contextlib
import importlib
import importlib.abc
import sys
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator


class _HiddenFromThisThread(importlib.abc.MetaPathFinder):
    """Makes `import NAME` (for the given top-level names) fail in the thread that installed
    it, as if the package were not installed; other threads import as usual."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.thread = _thread.get_ident()

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.partition(".")[0] in self.names and _thread.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@contextlib.contextmanager
def _without_pydantic() -> Iterator[None]:
    """dependency-injector imports pydantic when it is first imported, only to learn whether
    `Configuration.from_pydantic` can take pydantic 1's (or pydantic-settings') BaseSettings;
    nothing here uses that, and the import costs every command ~15 ms. Only what is not
    loaded yet is hidden, and only while dependency-injector loads (an application that
    uses pydantic, or SQLModel creating a database, imports it normally later)."""
    finder = _HiddenFromThisThread(("pydantic", "pydantic_settings"))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


with _without_pydantic():
    from dependency_injector import containers, providers

from kaccy_bitcoin.ports.signer import SignerError
from kaccy_bitcoin.bootstrap.config import ConfigError
from kaccy_bitcoin.domain.errors import LightningUnavailable
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds
from kaccy_bitcoin.domain.zeroconf import ZeroconfPolicy

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
    from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
    from kaccy_bitcoin.adapters.keys.software_signer import SoftwareSigner
    from kaccy_bitcoin.adapters.memory.publisher import InProcessPublisher as _Publisher, LogNotifier as _Notifier


class _Lazy:
    """Builds `module.name(...)`, importing `module` at the first call instead of now."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def target(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.module}.{self.name}, imported when first built>"


_CORE = "kaccy_bitcoin.adapters.bitcoin_core"
_HWI = "kaccy_bitcoin.adapters.hwi.hardware_wallet"
_SQL = "kaccy_bitcoin.adapters.sql.storage"
_APP = "kaccy_bitcoin.application"

CoreWalletSigner = _Lazy(f"{_CORE}.signer", "CoreWalletSigner")
HwiHardwareWallet = _Lazy(_HWI, "HwiHardwareWallet")
HwiSigner = _Lazy(_HWI, "HwiSigner")
SystemClock = _Lazy("kaccy_bitcoin.adapters.memory.clock", "SystemClock")
LogNotifier = _Lazy("kaccy_bitcoin.adapters.memory.publisher", "LogNotifier")
InProcessPublisher = _Lazy("kaccy_bitcoin.adapters.memory.publisher", "InProcessPublisher")
SqlUnitOfWorkFactory = _Lazy(_SQL, "SqlUnitOfWorkFactory")

PaymentSettings = _Lazy(f"{_APP}.settings", "PaymentSettings")
WatchRange = _Lazy(f"{_APP}.orders", "WatchRange")
CreateOrder = _Lazy(f"{_APP}.orders", "CreateOrder")
ShowOrder = _Lazy(f"{_APP}.orders", "ShowOrder")
ShowCheckout = _Lazy(f"{_APP}.checkout", "ShowCheckout")
CheckoutUpdates = _Lazy(f"{_APP}.checkout", "CheckoutUpdates")
PollPayments = _Lazy(f"{_APP}.monitor", "PollPayments")
TrackWithdrawals = _Lazy(f"{_APP}.withdrawal_tracker", "TrackWithdrawals")
TrackerSettings = _Lazy(f"{_APP}.withdrawal_tracker", "TrackerSettings")
MonitorTick = _Lazy(f"{_APP}.monitor_tick", "MonitorTick")
ListEvents = _Lazy(f"{_APP}.events", "ListEvents")
EventFeed = _Lazy(f"{_APP}.events", "EventFeed")
WithdrawalSettings = _Lazy(f"{_APP}.withdrawal_builder", "WithdrawalSettings")
WithdrawalBuilder = _Lazy(f"{_APP}.withdrawal_builder", "WithdrawalBuilder")
TransactionManager = _Lazy(f"{_APP}.transaction_manager", "TransactionManager")
ControlSettings = _Lazy(f"{_APP}.transaction_manager", "ControlSettings")
ApproveWithdrawal = _Lazy(f"{_APP}.withdrawals", "ApproveWithdrawal")
SetLimits = _Lazy(f"{_APP}.controls", "SetLimits")
ShowLimits = _Lazy(f"{_APP}.controls", "ShowLimits")
VerifyAudit = _Lazy(f"{_APP}.controls", "VerifyAudit")
QueryAudit = _Lazy(f"{_APP}.controls", "QueryAudit")
SignWithdrawal = _Lazy(f"{_APP}.withdrawals", "SignWithdrawal")
Broadcaster = _Lazy(f"{_APP}.withdrawals", "Broadcaster")
BroadcastWithdrawal = _Lazy(f"{_APP}.withdrawals", "BroadcastWithdrawal")
VoidWithdrawal = _Lazy(f"{_APP}.withdrawals", "VoidWithdrawal")
CancelWithdrawal = _Lazy(f"{_APP}.withdrawals", "CancelWithdrawal")
ShowWithdrawal = _Lazy(f"{_APP}.withdrawals", "ShowWithdrawal")
ListWithdrawals = _Lazy(f"{_APP}.withdrawals", "ListWithdrawals")
BumpWithdrawal = _Lazy(f"{_APP}.fee_bumping", "BumpWithdrawal")
CpfpWithdrawal = _Lazy(f"{_APP}.fee_bumping", "CpfpWithdrawal")
PayjoinWithdrawal = _Lazy(f"{_APP}.payjoin_sender", "PayjoinWithdrawal")
AiohttpPayjoinEndpoint = _Lazy("kaccy_bitcoin.adapters.payjoin_client.http", "AiohttpPayjoinEndpoint")
ListOrders = _Lazy(f"{_APP}.orders", "ListOrders")
ListAddresses = _Lazy(f"{_APP}.addresses", "ListAddresses")
CreateApiKey = _Lazy(f"{_APP}.api_access", "CreateApiKey")
Authenticate = _Lazy(f"{_APP}.api_access", "Authenticate")
ManageApiKeys = _Lazy(f"{_APP}.api_access", "ManageApiKeys")
RegisterWebhook = _Lazy(f"{_APP}.api_access", "RegisterWebhook")
ShowWebhooks = _Lazy(f"{_APP}.api_access", "ShowWebhooks")
RedeliverWebhook = _Lazy(f"{_APP}.api_access", "RedeliverWebhook")
DeliverWebhooks = _Lazy(f"{_APP}.webhooks", "DeliverWebhooks")
DeliverySettings = _Lazy(f"{_APP}.webhooks", "DeliverySettings")
CheckReadiness = _Lazy(f"{_APP}.health", "CheckReadiness")
SqlServiceStore = _Lazy("kaccy_bitcoin.adapters.sql.service_store", "SqlServiceStore")
AiohttpWebhookTransport = _Lazy("kaccy_bitcoin.adapters.http_api.webhook_sender", "AiohttpWebhookTransport")
CombineWithdrawal = _Lazy(f"{_APP}.withdrawals", "CombineWithdrawal")
WalletDirectory = _Lazy(f"{_APP}.wallets", "WalletDirectory")
AddWallet = _Lazy(f"{_APP}.wallets", "AddWallet")
ListWallets = _Lazy(f"{_APP}.wallets", "ListWallets")
TransferAddress = _Lazy(f"{_APP}.wallets", "TransferAddress")
CustodyStatus = _Lazy(f"{_APP}.custody", "CustodyStatus")
ConsolidationSettings = _Lazy(f"{_APP}.consolidation", "ConsolidationSettings")
WalletNames = _Lazy(f"{_APP}.consolidation", "WalletNames")
PlanConsolidation = _Lazy(f"{_APP}.consolidation", "PlanConsolidation")
RunConsolidation = _Lazy(f"{_APP}.consolidation", "RunConsolidation")
ShowConsolidation = _Lazy(f"{_APP}.consolidation", "ShowConsolidation")
FollowConsolidations = _Lazy(f"{_APP}.consolidation", "FollowConsolidations")
ProposeConsolidation = _Lazy(f"{_APP}.consolidation", "ProposeConsolidation")
Stats = _Lazy(f"{_APP}.stats", "Stats")
DailyFlows = _Lazy(f"{_APP}.stats", "DailyFlows")
BitcoinCoreSwapChain = _Lazy(f"{_CORE}.swap_chain", "BitcoinCoreSwapChain")
SwapSettings = _Lazy(f"{_APP}.swaps", "SwapSettings")
SwapContext = _Lazy(f"{_APP}.swaps", "SwapContext")
FollowSwaps = _Lazy(f"{_APP}.swap_monitor", "FollowSwaps")
InitiateSwap = _Lazy(f"{_APP}.swaps", "InitiateSwap")
AcceptSwap = _Lazy(f"{_APP}.swaps", "AcceptSwap")
ParticipateSwap = _Lazy(f"{_APP}.swaps", "ParticipateSwap")
RedeemSwap = _Lazy(f"{_APP}.swaps", "RedeemSwap")
RefundSwap = _Lazy(f"{_APP}.swaps", "RefundSwap")
CancelSwap = _Lazy(f"{_APP}.swaps", "CancelSwap")
ShowSwap = _Lazy(f"{_APP}.swaps", "ShowSwap")
ListSwaps = _Lazy(f"{_APP}.swaps", "ListSwaps")
ShowPegAccounts = _Lazy(f"{_APP}.pegs", "ShowPegAccounts")
PayInvoice = _Lazy(f"{_APP}.lightning_payments", "PayInvoice")
SendLightningPayout = _Lazy(f"{_APP}.lightning_payments", "SendLightningPayout")
LightningPayoutSettings = _Lazy(f"{_APP}.lightning_payments", "LightningPayoutSettings")
ApproveLightningPayout = _Lazy(f"{_APP}.lightning_payments", "ApproveLightningPayout")
CancelLightningPayout = _Lazy(f"{_APP}.lightning_payments", "CancelLightningPayout")
ShowLightningPayout = _Lazy(f"{_APP}.lightning_payments", "ShowLightningPayout")
PayoutById = _Lazy(f"{_APP}.lightning_payments", "PayoutById")
ListChannels = _Lazy(f"{_APP}.lightning_channels", "ListChannels")
OpenChannel = _Lazy(f"{_APP}.lightning_channels", "OpenChannel")
CloseChannel = _Lazy(f"{_APP}.lightning_channels", "CloseChannel")
CreateOrderInvoice = _Lazy(f"{_APP}.lightning_invoices", "CreateOrderInvoice")
ShowOrderInvoice = _Lazy(f"{_APP}.lightning_invoices", "ShowOrderInvoice")
InvoiceSync = _Lazy(f"{_APP}.lightning_invoices", "InvoiceSync")
PayjoinSettings = _Lazy(f"{_APP}.payjoin_offers", "PayjoinSettings")
ReceivePayjoin = _Lazy(f"{_APP}.payjoin", "ReceivePayjoin")
FollowPayjoins = _Lazy(f"{_APP}.payjoin", "FollowPayjoins")
CrossCheckNodes = _Lazy(f"{_APP}.nodes", "CrossCheckNodes")
ShowNodes = _Lazy(f"{_APP}.nodes", "ShowNodes")
WatchInvoices = _Lazy(f"{_APP}.lightning_invoices", "WatchInvoices")


def _http_clients(proxy: str | None, proxy_except: str | None) -> Any:
    """Every outgoing HTTP session is made by this one factory (KACCY_PROXY applied there)."""
    from kaccy_bitcoin.adapters.net.http import HttpClients   # aiohttp: only commands that connect out

    return HttpClients.from_settings(proxy, proxy_except)


async def _rpc_client(url: str | None, user: str | None, password: str | None,
                      cookie: str | None, http: Any, nodes: list | None = None) -> AsyncIterator[BitcoinRpc]:
    if not url:
        raise ConfigError("KACCY_BITCOIN_RPC_URL is not set")
    if not cookie and not user:
        raise ConfigError("set KACCY_BITCOIN_RPC_USER and KACCY_BITCOIN_RPC_PASSWORD, or KACCY_BITCOIN_RPC_COOKIE")
    from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc   # aiohttp: only commands that use the node

    # With several nodes (the first one's client here) the pool moves on to the next node
    # instead of retrying this one.
    more = {"retries": 0} if len(nodes or ()) > 1 else {}
    client = BitcoinRpc(url, user=user, password=password, cookie_file=cookie, http=http, **more)
    try:
        yield client
    finally:
        await client.close()


async def _other_nodes(nodes: list[dict[str, Any]] | None, http: Any) -> AsyncIterator[list[BitcoinRpc]]:
    """The RPC clients of the nodes after the first (none with one node), closed at shutdown.
    With several nodes no client retries: a node that fails is left for the next at once."""
    from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc

    clients = [BitcoinRpc(n["url"], user=n.get("user"), password=n.get("password"), cookie_file=n.get("cookie"),
                          http=http, retries=0) for n in (nodes or [])[1:]]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


def _chain_backend(rpc: BitcoinRpc, others: list[BitcoinRpc], wallet: str, max_lag: int, fork_depth: int) -> Any:
    """The node's BitcoinCoreBackend; with several nodes, the pool of one backend per node
    (adapters/bitcoin_core/pool.py), the first on `rpc`."""
    from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend

    if not others:
        return BitcoinCoreBackend(rpc, wallet)
    from kaccy_bitcoin.adapters.bitcoin_core.pool import NodePool

    return NodePool([BitcoinCoreBackend(r, wallet) for r in (rpc, *others)], max_lag=max_lag,
                    fork_depth=fork_depth)


async def _lnd_node(url: str | None, macaroon: str | None, tls_cert: str | None, clock: Any,
                    http: Any) -> AsyncIterator[Any]:
    if not url:
        raise LightningUnavailable("no Lightning node: KACCY_LND_REST_URL is not set (LND's REST address, "
                                   "e.g. https://127.0.0.1:8080)")
    if not macaroon or not tls_cert:
        raise ConfigError("set KACCY_LND_MACAROON and KACCY_LND_TLS_CERT: the paths of LND's macaroon and "
                          "of its TLS certificate")
    from kaccy_bitcoin.adapters.lnd.client import LndRestClient   # aiohttp: only the Lightning commands
    from kaccy_bitcoin.adapters.lnd.node import LndNode

    node = LndNode(LndRestClient(url, macaroon_path=macaroon, tls_cert_path=tls_cert, http=http), clock)
    try:
        yield node
    finally:
        await node.close()


async def _chain_notifications(mode: str, rpc: BitcoinRpc, http: Any, several: bool = False) -> AsyncIterator[Any]:
    """The node's ZMQ notifications (the endpoints asked of the node), or none when
    KACCY_ZMQ=off; either way a ChainNotifications whose `wait` the monitor sleeps in. With
    several nodes, the first node's, or none when it does not answer (the monitor then polls
    at its interval)."""
    from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError
    from kaccy_bitcoin.adapters.bitcoin_core.zmq_notifications import ZmqNotifications   # pyzmq

    try:
        notifications = ZmqNotifications({}) if mode == "off" else await ZmqNotifications.discover(rpc, http.proxy)
    except BitcoinCoreError:
        if not several:
            raise
        notifications = ZmqNotifications({})
    try:
        yield notifications
    finally:
        notifications.close()
async def _webhook_transport(allow_private: bool, http: Any) -> AsyncIterator[Any]:
    transport = AiohttpWebhookTransport(allow_private=bool(allow_private), http=http)
    try:
        yield transport
    finally:
        await transport.close()


def _lightning_check(url: str | None, lightning: Any) -> Callable[[], Any] | None:
    """Readiness asks LND only when it is configured (the provider builds the node on demand)."""
    if not url:
        return None

    async def node() -> Any:
        built = lightning()
        return await built if hasattr(built, "__await__") else built
    return node


def _engine(url: str) -> Iterator[Engine]:
    """The database engine, schema checked; `shutdown_resources()` closes its connections, so a
    command leaves no connection for the interpreter's exit to find."""
    from kaccy_bitcoin.adapters.sql.storage import make_engine

    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _leadership(engine: Engine, data_dir: str, role: str = "monitor") -> Any:
    from kaccy_bitcoin.adapters.sql.leadership import leadership_for

    return leadership_for(engine, data_dir, role)


def _deriver(xpub: str | None, network: str, address_type: str, fingerprint: str | None) -> Bip32AddressDeriver:
    if not xpub:
        raise ConfigError("KACCY_XPUB is not set (the account-level extended public key)")
    from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver, parse_address_type   # bip-utils

    return Bip32AddressDeriver(xpub, Network.parse(network), parse_address_type(address_type), fingerprint)


def _multisig_derivers(network: str) -> Callable[[Any], Any]:
    """Makes the deriver of a multisig wallet (bip-utils, python-bitcointx, HWI's descriptor
    checksum: imported when the first multisig wallet is opened)."""
    def make(wallet: Any) -> Any:
        from kaccy_bitcoin.adapters.bip32.multisig import MultisigAddressDeriver

        return MultisigAddressDeriver(wallet, Network.parse(network))
    return make


def _custody(tiers: str | None, targets: str | None) -> Any:
    from kaccy_bitcoin.domain.custody import CustodyPolicy

    return CustodyPolicy.parse(tiers, targets)


def _software_signer(mnemonic: str | None, passphrase: str, deriver: Bip32AddressDeriver) -> SoftwareSigner:
    if not mnemonic:
        raise SignerError("the software signer needs KACCY_SIGNER_MNEMONIC")
    from kaccy_bitcoin.adapters.keys.software_signer import SoftwareSigner   # bip-utils, bitcointx

    return SoftwareSigner(mnemonic, passphrase or "", deriver)


def _swap_keys(mnemonic: str | None, passphrase: str, network: str) -> Any:
    """Swap keys from KACCY_SIGNER_MNEMONIC; None without it (the swap commands then answer
    `signer_required`)."""
    if not mnemonic:
        return None
    from kaccy_bitcoin.adapters.keys.swap_keys import SeedSwapKeys   # bip-utils, bitcointx

    return SeedSwapKeys(mnemonic, passphrase or "", Network.parse(network))


def _l2_keys(mnemonic: str | None, passphrase: str, network: str) -> Any:
    """Stacks and RSK account keys from KACCY_SIGNER_MNEMONIC; None without it (the peg commands
    then answer `signer_required`)."""
    if not mnemonic:
        return None
    from kaccy_bitcoin.adapters.keys.l2_keys import SeedL2Keys   # bip-utils

    return SeedL2Keys(mnemonic, passphrase or "", Network.parse(network))


def _fingerprint(configured: str | None, mnemonic: str | None, software_signer) -> str:  # noqa: ANN001
    """Master key fingerprint for PSBT key origins: configured, else the software signer's."""
    if configured:
        return configured.lower()
    if mnemonic:
        return software_signer().fingerprint
    return "00000000"


def _payjoin_endpoint(url: str | None, mnemonic: str | None) -> str | None:
    """KACCY_PAYJOIN_URL when the software signer (which signs our input) is configured, else None."""
    return url if url and mnemonic else None


def _when_several(nodes: list | None, provided: Any) -> Any:
    """`provided` with several Bitcoin nodes, else None: one node has nothing to cross-check."""
    return provided if len(nodes or ()) > 1 else None


def _when_lnd(url: str | None, provided: Any) -> Any:
    """`provided` when LND is configured, else None (Lightning off)."""
    return provided if url else None


def _subscribe_notifier(notifier: _Notifier) -> _Publisher:
    publisher = InProcessPublisher()

    async def discrepancies(event):  # noqa: ANN001, ANN202
        if event.is_discrepancy:
            await notifier.notify(event)

    publisher.subscribe(discrepancies)
    return publisher


class Gateways(containers.DeclarativeContainer):
    config = providers.Configuration()

    http = providers.Singleton(_http_clients, proxy=config.proxy, proxy_except=config.proxy_except)
    rpc = providers.Resource(_rpc_client, url=config.bitcoin_rpc_url, user=config.bitcoin_rpc_user,
                             password=config.bitcoin_rpc_password, cookie=config.bitcoin_rpc_cookie, http=http,
                             nodes=config.bitcoin_nodes)
    other_nodes = providers.Resource(_other_nodes, nodes=config.bitcoin_nodes, http=http)
    # One node's backend, or the pool of several nodes (also the NodeSet: `nodes`, /v1/nodes).
    chain = providers.Singleton(_chain_backend, rpc=rpc, others=other_nodes, wallet=config.bitcoin_rpc_wallet,
                                max_lag=config.node_max_lag, fork_depth=config.node_fork_depth)
    chain_notifications = providers.Resource(_chain_notifications, mode=config.zmq, rpc=rpc, http=http,
                                             several=providers.Callable(lambda n: len(n or ()) > 1,
                                                                        config.bitcoin_nodes))
    deriver = providers.Singleton(_deriver, xpub=config.xpub, network=config.network,
                                  address_type=config.address_type, fingerprint=config.xpub_fingerprint)
    multisig_derivers = providers.Singleton(_multisig_derivers, network=config.network)
    clock = providers.Singleton(SystemClock)
    lightning = providers.Resource(_lnd_node, url=config.lnd_rest_url, macaroon=config.lnd_macaroon,
                                   tls_cert=config.lnd_tls_cert, clock=clock, http=http)
    notifier = providers.Singleton(LogNotifier)
    software_signer = providers.Singleton(_software_signer, mnemonic=config.signer_mnemonic,
                                          passphrase=config.signer_passphrase, deriver=deriver)
    hardware_wallet = providers.Singleton(
        HwiHardwareWallet, network=providers.Callable(Network.parse, config.network),
        address_type=providers.Callable(lambda d: d.address_type, deriver))
    core_signer = providers.Singleton(CoreWalletSigner, rpc=rpc, wallet=config.signer_core_wallet,
                                      network=providers.Callable(Network.parse, config.network))
    publisher = providers.Singleton(_subscribe_notifier, notifier)
    swap_chain = providers.Singleton(BitcoinCoreSwapChain, rpc=rpc, wallet=config.bitcoin_rpc_wallet)
    swap_keys = providers.Singleton(_swap_keys, mnemonic=config.signer_mnemonic, passphrase=config.signer_passphrase,
                                    network=config.network)
    l2_keys = providers.Singleton(_l2_keys, mnemonic=config.signer_mnemonic, passphrase=config.signer_passphrase,
                                  network=config.network)
    webhook_transport = providers.Resource(_webhook_transport, allow_private=config.webhook_allow_private,
                                           http=http)
    payjoin_endpoint = providers.Singleton(AiohttpPayjoinEndpoint, http=http)   # a payjoin receiver's pj= endpoint


class Storage(containers.DeclarativeContainer):
    config = providers.Configuration()

    engine = providers.Resource(_engine, url=config.database_url)
    uow = providers.Singleton(SqlUnitOfWorkFactory, engine=engine)
    # Who runs the monitors among the processes sharing this database (released by RunAsLeader).
    leadership = providers.Singleton(_leadership, engine=engine, data_dir=config.data_dir)
    # The webhook deliveries have a lock of their own: one deliverer among every `serve`, whether
    # it runs the monitors or not (the monitors may lead from another process).
    webhook_leadership = providers.Singleton(_leadership, engine=engine, data_dir=config.data_dir, role="webhooks")
    # The HTTP service's own records: API keys, idempotency keys, webhooks.
    service_store = providers.Singleton(SqlServiceStore, engine=engine)


class Services(containers.DeclarativeContainer):
    config = providers.Configuration()
    gateways = providers.DependenciesContainer()
    storage = providers.DependenciesContainer()

    payment_settings = providers.Singleton(
        PaymentSettings,
        thresholds=providers.Callable(ConfirmationThresholds.parse, config.confirmations),
        tolerance=providers.Callable(Satoshis, config.tolerance_sat),
        gap_limit=config.gap_limit,
        zeroconf=providers.Factory(ZeroconfPolicy, max_sat=config.zeroconf_max_sat,
                                   max_score=config.zeroconf_max_score),
        public_url=config.public_url,
    )
    # One per process: it notes the range the node is known to watch, shared by every use case.
    watch_range = providers.Singleton(WatchRange, deriver=gateways.deriver, chain=gateways.chain,
                                      gap_limit=config.gap_limit)
    # Every wallet: `default` (KACCY_XPUB) and those `wallet add` stored; one per process, as
    # each wallet's watch range is noted in it.
    wallets = providers.Singleton(WalletDirectory, uow=storage.uow, default_deriver=gateways.deriver,
                                  default_watch=watch_range, multisig_deriver=gateways.multisig_derivers,
                                  chain=gateways.chain, gap_limit=config.gap_limit)
    custody = providers.Singleton(_custody, tiers=config.custody_tiers, targets=config.custody_targets)
    add_wallet = providers.Factory(AddWallet, uow=storage.uow, wallets=wallets, clock=gateways.clock,
                                   network=providers.Callable(Network.parse, config.network))
    list_wallets = providers.Factory(ListWallets, wallets=wallets, chain=gateways.chain)
    transfer_address = providers.Factory(TransferAddress, uow=storage.uow, wallets=wallets)
    custody_status = providers.Factory(CustodyStatus, wallets=wallets, chain=gateways.chain, policy=custody)
    # PayJoin receiving (BIP78): `pj=` in orders' URIs, `/pj/<token>`, and the monitor's phase.
    payjoin_settings = providers.Singleton(
        PayjoinSettings, network=providers.Callable(Network.parse, config.network),
        url=providers.Callable(_payjoin_endpoint, config.payjoin_url, config.signer_mnemonic),
        fallback_after=config.payjoin_fallback_after)
    create_order = providers.Factory(CreateOrder, uow=storage.uow, deriver=gateways.deriver,
                                     watch=watch_range, clock=gateways.clock, settings=payment_settings,
                                     wallets=wallets, payjoin=payjoin_settings)
    receive_payjoin = providers.Factory(ReceivePayjoin, uow=storage.uow, chain=gateways.chain,
                                        deriver=gateways.deriver, signer=gateways.software_signer.provider,
                                        clock=gateways.clock, publisher=gateways.publisher, settings=payjoin_settings)
    follow_payjoins = providers.Factory(FollowPayjoins, uow=storage.uow, chain=gateways.chain, clock=gateways.clock,
                                        publisher=gateways.publisher, settings=payjoin_settings)
    show_order = providers.Factory(ShowOrder, uow=storage.uow, settings=payment_settings)
    # With several nodes the pool is also their NodeSet: nothing is finalized while they disagree.
    several_nodes = providers.Callable(_when_several, config.bitcoin_nodes, gateways.chain)
    poll_payments = providers.Factory(PollPayments, uow=storage.uow, chain=gateways.chain, clock=gateways.clock,
                                      publisher=gateways.publisher, settings=payment_settings, nodes=several_nodes)
    cross_check_nodes = providers.Factory(CrossCheckNodes, nodes=gateways.chain, uow=storage.uow,
                                          clock=gateways.clock, publisher=gateways.publisher)
    show_nodes = providers.Factory(ShowNodes, nodes=gateways.chain)
    # Which wallets exist: `default` (KACCY_XPUB) until wallets have names.
    wallet_names = providers.Factory(WalletNames, uow=storage.uow)
    consolidation_settings = providers.Singleton(
        ConsolidationSettings,
        long_term_fee_rate=providers.Callable(FeeRate.from_sat_per_vb, config.long_term_fee_rate),
        propose_above=config.consolidate_above)
    track_withdrawals = providers.Factory(
        TrackWithdrawals, uow=storage.uow, chain=gateways.chain, clock=gateways.clock,
        publisher=gateways.publisher,
        settings=providers.Factory(TrackerSettings, network=providers.Callable(Network.parse, config.network),
                                   first_delay_seconds=config.rebroadcast_delay,
                                   stuck_after_seconds=config.stuck_after,
                                   final_confirmations=payment_settings.provided.thresholds.final,
                                   unsigned_ttl_seconds=config.withdrawal_ttl),
        followers=providers.List(providers.Factory(FollowConsolidations)), nodes=several_nodes)
    # The outbox: a page of committed events for `kaccy-bitcoin events`, and the waiting feed
    # with named consumers for a program that embeds the library.
    list_events = providers.Factory(ListEvents, uow=storage.uow)
    event_feed = providers.Factory(EventFeed, uow=storage.uow, clock=gateways.clock)
    # The customer's checkout page (`/pay/{token}`) and its live feed of that one order's changes.
    show_checkout = providers.Factory(ShowCheckout, uow=storage.uow, clock=gateways.clock,
                                      settings=payment_settings, payjoin=payjoin_settings)
    checkout_updates = providers.Factory(CheckoutUpdates, show=show_checkout, feed=event_feed)

    withdrawal_settings = providers.Singleton(
        WithdrawalSettings,
        network=providers.Callable(Network.parse, config.network),
        fallback_fee_rate=providers.Callable(FeeRate.from_sat_per_vb, config.fallback_fee_rate),
        fee_target_blocks=config.fee_target_blocks,
        master_fingerprint=providers.Callable(_fingerprint, config.xpub_fingerprint, config.signer_mnemonic,
                                              gateways.software_signer.provider),
        long_term_fee_rate=providers.Callable(FeeRate.from_sat_per_vb, config.long_term_fee_rate),
    )
    withdrawal_builder = providers.Factory(WithdrawalBuilder, chain=gateways.chain, deriver=gateways.deriver,
                                           watch=watch_range, clock=gateways.clock, settings=withdrawal_settings,
                                           uow=storage.uow, wallets=wallets)
    network = providers.Callable(Network.parse, config.network)
    combine_withdrawal = providers.Factory(CombineWithdrawal, uow=storage.uow, clock=gateways.clock,
                                           network=providers.Callable(Network.parse, config.network))
    sign_withdrawal = providers.Factory(
        SignWithdrawal, uow=storage.uow, clock=gateways.clock, network=network,
        signers=providers.Dict(
            software=gateways.software_signer.provider,
            core=gateways.core_signer.provider,
            hwi=providers.Factory(HwiSigner, wallet=gateways.hardware_wallet,
                                  network=providers.Callable(Network.parse, config.network),
                                  fingerprint=withdrawal_settings.provided.master_fingerprint).provider))
    broadcaster = providers.Factory(Broadcaster, uow=storage.uow, chain=gateways.chain, clock=gateways.clock,
                                    network=network)
    broadcast_withdrawal = providers.Factory(BroadcastWithdrawal, uow=storage.uow, broadcaster=broadcaster)
    void_withdrawal = providers.Factory(VoidWithdrawal, builder=withdrawal_builder, uow=storage.uow,
                                        chain=gateways.chain, clock=gateways.clock, signing=sign_withdrawal,
                                        broadcaster=broadcaster)
    # `withdraw cancel`/`approve` take a held payout's id: a withdrawal's or a Lightning payment's.
    cancel_withdrawal = providers.Factory(
        PayoutById, uow=storage.uow,
        withdrawal=providers.Factory(CancelWithdrawal, uow=storage.uow, clock=gateways.clock),
        lightning=providers.Factory(CancelLightningPayout, uow=storage.uow, clock=gateways.clock))
    approve_withdrawal = providers.Factory(
        PayoutById, uow=storage.uow,
        withdrawal=providers.Factory(ApproveWithdrawal, uow=storage.uow, clock=gateways.clock),
        lightning=providers.Factory(ApproveLightningPayout, uow=storage.uow, clock=gateways.clock))
    control_settings = providers.Factory(ControlSettings, review_score=config.review_score)
    # Every withdrawal request goes through the transaction manager: limits, risk, wallet,
    # coins, PSBT (`process` also signs and broadcasts), audit.
    transaction_manager = providers.Factory(
        TransactionManager, builder=withdrawal_builder, uow=storage.uow, clock=gateways.clock,
        publisher=gateways.publisher, settings=providers.Factory(ControlSettings, review_score=config.review_score),
        custody=custody, signing=sign_withdrawal, broadcasting=broadcast_withdrawal)
    create_withdrawal = transaction_manager
    # `withdraw payjoin`: the transaction manager's way, then BIP78 with the URI's receiver.
    payjoin_withdrawal = providers.Factory(
        PayjoinWithdrawal, manager=transaction_manager, signing=sign_withdrawal, broadcaster=broadcaster,
        uow=storage.uow, chain=gateways.chain, endpoint=gateways.payjoin_endpoint, builder=withdrawal_builder,
        network=network, timeout_seconds=config.payjoin_timeout)
    set_limits = providers.Factory(SetLimits, uow=storage.uow, clock=gateways.clock)
    show_limits = providers.Factory(ShowLimits, uow=storage.uow)
    verify_audit = providers.Factory(VerifyAudit, uow=storage.uow)
    query_audit = providers.Factory(QueryAudit, uow=storage.uow)
    show_withdrawal = providers.Factory(ShowWithdrawal, uow=storage.uow, chain=gateways.chain)
    list_withdrawals = providers.Factory(ListWithdrawals, uow=storage.uow)
    cpfp_withdrawal = providers.Factory(CpfpWithdrawal, builder=withdrawal_builder, uow=storage.uow,
                                        chain=gateways.chain, clock=gateways.clock)
    bump_withdrawal = providers.Factory(BumpWithdrawal, builder=withdrawal_builder, uow=storage.uow,
                                        chain=gateways.chain, clock=gateways.clock, publisher=gateways.publisher,
                                        controls=control_settings, custody=custody)
    plan_consolidation = providers.Factory(PlanConsolidation, builder=withdrawal_builder, uow=storage.uow,
                                           clock=gateways.clock, wallets=wallet_names,
                                           settings=consolidation_settings)
    run_consolidation = providers.Factory(RunConsolidation, planner=plan_consolidation, builder=withdrawal_builder,
                                          uow=storage.uow, clock=gateways.clock, signing=sign_withdrawal,
                                          broadcasting=broadcast_withdrawal)
    show_consolidation = providers.Factory(ShowConsolidation, uow=storage.uow, wallets=wallet_names)
    # The planner and builder are built only when a proposal is due (KACCY_CONSOLIDATE_ABOVE set):
    # the monitor itself needs no KACCY_XPUB.
    propose_consolidation = providers.Factory(ProposeConsolidation, planner=plan_consolidation.provider,
                                              builder=withdrawal_builder.provider, uow=storage.uow,
                                              clock=gateways.clock,
                                              publisher=gateways.publisher, wallets=wallet_names,
                                              settings=consolidation_settings)
    stats = providers.Factory(Stats, uow=storage.uow, builder=withdrawal_builder, wallets=wallet_names)
    daily_flows = providers.Factory(DailyFlows, uow=storage.uow, clock=gateways.clock)
    list_orders = providers.Factory(ListOrders, uow=storage.uow, settings=payment_settings)
    list_addresses = providers.Factory(ListAddresses, uow=storage.uow)

    # The HTTP service: keys, webhooks, readiness.
    create_api_key = providers.Factory(CreateApiKey, store=storage.service_store, clock=gateways.clock)
    authenticate = providers.Singleton(Authenticate, store=storage.service_store)
    manage_api_keys = providers.Factory(ManageApiKeys, store=storage.service_store)
    register_webhook = providers.Factory(RegisterWebhook, store=storage.service_store, uow=storage.uow,
                                         clock=gateways.clock, transport=gateways.webhook_transport,
                                         allow_private=config.webhook_allow_private)
    show_webhooks = providers.Factory(ShowWebhooks, store=storage.service_store)
    redeliver_webhook = providers.Factory(RedeliverWebhook, store=storage.service_store, uow=storage.uow)
    deliver_webhooks = providers.Singleton(
        DeliverWebhooks, store=storage.service_store, uow=storage.uow, transport=gateways.webhook_transport,
        clock=gateways.clock, settings=providers.Factory(DeliverySettings, first_retry=config.webhook_retry_first,
                                                         max_retry=config.webhook_retry_max))
    check_readiness = providers.Singleton(
        CheckReadiness, chain=gateways.chain, uow=storage.uow, store=storage.service_store,
        lightning=providers.Callable(_lightning_check, config.lnd_rest_url, gateways.lightning.provider),
        max_lag_blocks=config.ready_max_lag, final_confirmations=payment_settings.provided.thresholds.final,
        nodes=several_nodes)

    # A Lightning payout goes through the controls of a withdrawal: limits, risk, tier, audit.
    send_ln_payment = providers.Factory(SendLightningPayout, node=gateways.lightning, uow=storage.uow,
                                        clock=gateways.clock, publisher=gateways.publisher)
    pay_invoice = providers.Factory(
        PayInvoice, node=gateways.lightning, uow=storage.uow, clock=gateways.clock, publisher=gateways.publisher,
        controls=control_settings, custody=custody, sender=send_ln_payment,
        settings=providers.Factory(LightningPayoutSettings, max_fee_ppm=config.ln_max_fee_ppm))
    show_ln_payment = providers.Factory(ShowLightningPayout, uow=storage.uow)
    list_channels = providers.Factory(ListChannels, node=gateways.lightning)
    open_channel = providers.Factory(OpenChannel, node=gateways.lightning, uow=storage.uow, clock=gateways.clock)
    close_channel = providers.Factory(CloseChannel, node=gateways.lightning, uow=storage.uow, clock=gateways.clock)
    create_order_invoice = providers.Factory(CreateOrderInvoice, uow=storage.uow, node=gateways.lightning,
                                             clock=gateways.clock)
    invoice_sync = providers.Factory(InvoiceSync, uow=storage.uow, node=gateways.lightning, clock=gateways.clock,
                                     publisher=gateways.publisher, settings=payment_settings)
    # `ln invoice show` looks an open invoice up at LND when LND is configured, else shows what is stored.
    show_order_invoice = providers.Factory(
        ShowOrderInvoice, uow=storage.uow,
        sync=providers.Callable(_when_lnd, config.lnd_rest_url, invoice_sync.provider))
    watch_invoices = providers.Factory(WatchInvoices, sync=invoice_sync, node=gateways.lightning)
    # Atomic swaps (application/swaps.py); the keys, builder and manager are made when first used.
    swap_context = providers.Factory(
        SwapContext, uow=storage.uow, chain=gateways.swap_chain, clock=gateways.clock, publisher=gateways.publisher,
        settings=providers.Factory(SwapSettings, network=network, min_depth=config.swap_min_depth,
                                   safety_blocks=config.swap_safety_blocks, auto_refund=config.swap_auto_refund),
        keys=gateways.swap_keys.provider, builder=withdrawal_builder.provider, manager=transaction_manager.provider,
        signing=sign_withdrawal.provider, broadcasting=broadcast_withdrawal.provider)
    follow_swaps = providers.Factory(FollowSwaps, ctx=swap_context)
    # The swap commands' use cases (`swap ...`, /v1/swaps/...), each over the same context.
    initiate_swap = providers.Factory(InitiateSwap, ctx=swap_context)
    accept_swap = providers.Factory(AcceptSwap, ctx=swap_context)
    participate_swap = providers.Factory(ParticipateSwap, ctx=swap_context)
    redeem_swap = providers.Factory(RedeemSwap, ctx=swap_context)
    refund_swap = providers.Factory(RefundSwap, ctx=swap_context)
    cancel_swap = providers.Factory(CancelSwap, ctx=swap_context)
    show_swap = providers.Factory(ShowSwap, ctx=swap_context)
    list_swaps = providers.Factory(ListSwaps, ctx=swap_context)
    # Layer-2 pegs (application/pegs.py, docs/l2.md).
    peg_accounts = providers.Factory(ShowPegAccounts, keys=gateways.l2_keys.provider)
    # One round of the monitor: payments, withdrawals, the open invoices when LND is configured,
    # a consolidation proposal when one is due, and the swaps.
    monitor_tick = providers.Factory(MonitorTick, poll=poll_payments, track=track_withdrawals,
                                     uow=storage.uow, clock=gateways.clock, publisher=gateways.publisher,
                                     lightning=providers.Callable(_when_lnd, config.lnd_rest_url,
                                                                  invoice_sync.provider),
                                     more=providers.List(propose_consolidation, follow_swaps, follow_payjoins),
                                     nodes=providers.Callable(_when_several, config.bitcoin_nodes,
                                                              cross_check_nodes))


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    gateways = providers.Container(Gateways, config=config)
    storage = providers.Container(Storage, config=config)
    services = providers.Container(Services, config=config, gateways=gateways, storage=storage)


def build(config: dict) -> Container:
    """A container configured from a dict (see `bootstrap.config.load`)."""
    container = Container()
    config = {"bitcoin_nodes": [], "node_max_lag": 2, "node_fork_depth": 6, **config}
    container.config.from_dict(config)
    return container
