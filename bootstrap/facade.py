"""`KaccyBitcoin`: the library's one entry point for a program that embeds it (kaccy-api).

    async with KaccyBitcoin.from_env() as kaccy:
        order = await kaccy.create_order("order-42", 125_000)

Every use case is an `async` method taking plain values (str, int, sat/vB as int, str or
Decimal) and returning a frozen attrs object (`kaccy_bitcoin.application.results`); every
error it raises on purpose is a `KaccyError` with a stable `.code` (the command line's code),
and anything unexpected is wrapped in `InternalError` (its `__cause__` the original). Entering
the context checks the database's schema (and the software signer's words, if set); leaving
it closes what the object opened (the node's HTTP session, LND's, the database's connections).

Adding a use case: give the container a provider, then add a method here calling
`self._use(provider_name, *args)` and reading the answer with `read(ResultType, answer)`.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping, Sequence

from kaccy_bitcoin.application.results import (
    AuditEntry,
    AuditVerification,
    Channel,
    ConsolidationPlan,
    ConsolidationRun,
    ConsolidationStatus,
    EventPage,
    Limits,
    Stats,
    WalletAdded,
    WalletBalance,
    LightningPayment,
    OrderCreated,
    OrderInvoice,
    OrderInvoiceCreated,
    OrderView,
    VoidedWithdrawal,
    Withdrawal,
    WithdrawalStep,
    read,
)
from kaccy_bitcoin.bootstrap.config import DEFAULTS, ConfigError, load
from kaccy_bitcoin.domain.errors import InternalError, KaccyError
from kaccy_bitcoin.domain.events import DomainEvent, StoredEvent
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

FeeRateLike = FeeRate | int | str | Decimal


def _fee_rate(value: FeeRateLike | None) -> FeeRate | None:
    if value is None or isinstance(value, FeeRate):
        return value
    return FeeRate.from_sat_per_vb(value)


class KaccyBitcoin:
    """The application's use cases behind one object; see the module's docstring."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = dict(settings)
        self._container: Container | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KaccyBitcoin:
        """Configured like the command line: `KACCY_*` variables (of `env`, default the process's
        environment) over the TOML file named by `KACCY_CONFIG`."""
        return cls(load(env))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, /, **more: Any) -> KaccyBitcoin:
        """Configured by the setting names of the README's table in lower case without `KACCY_`
        (`bitcoin_rpc_url="http://..."`, `xpub=...`); the rest take their defaults, not the
        environment. Each value is checked as the command line checks it (ConfigError)."""
        given = {**(settings or {}), **more}
        unknown = set(given) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(load({f"KACCY_{k.upper()}": str(v) for k, v in given.items() if v is not None}))

    @property
    def settings(self) -> dict[str, Any]:
        """The effective settings (credentials included: do not log them)."""
        return dict(self._settings)

    @property
    def container(self) -> Container:
        """The dependency-injector container (for overriding a provider in tests)."""
        if self._container is None:
            from kaccy_bitcoin.bootstrap.container import build

            self._container = build(self._settings)
        return self._container

    async def __aenter__(self) -> KaccyBitcoin:
        try:
            self.container.storage.engine()   # the schema check: a database behind or ahead is refused
            if self.container.config.signer_mnemonic():
                self.container.gateways.software_signer()   # words for another account are refused
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close what was opened (also done on leaving the `async with`)."""
        if self._container is not None:
            shutdown = self._container.shutdown_resources()
            if inspect.isawaitable(shutdown):
                await shutdown

    async def _use(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the use case the container provides as `services.<name>`."""
        return await self._use_method(name, "__call__", *args, **kwargs)

    async def _use_method(self, name: str, method: str | None, *args: Any, **kwargs: Any) -> Any:
        """Call `method` of the object the container provides as `services.<name>` (built on
        demand, awaited when its provider is a coroutine; None: the object itself), with every
        error a `KaccyError`."""
        try:
            provided = getattr(self.container.services, name)()
            obj = await provided if inspect.isawaitable(provided) else provided
            return obj if method is None else await getattr(obj, method)(*args, **kwargs)
        except (KaccyError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: one error type for the embedder
            raise InternalError(f"{type(exc).__name__}: {exc}") from exc

    # --- orders -------------------------------------------------------------------------
    async def create_order(self, order_id: str, amount_sat: int, *, expires_in: int | None = None,
                           label: str = "", wallet: str | None = None) -> OrderCreated:
        """A fresh deposit address for the order (of `wallet`, default KACCY_XPUB's); the same
        order id again gives the same one (`OrderConflict` if the amount differs)."""
        return read(OrderCreated, await self._use("create_order", order_id, Satoshis(amount_sat),
                                                  expires_in=expires_in, label=label, wallet=wallet))

    async def show_order(self, order_id: str) -> OrderView:
        """The order's payment status (`NotFound` for an unknown id)."""
        return await self._use("show_order", order_id)

    # --- withdrawals --------------------------------------------------------------------
    async def create_withdrawal(self, payouts: Sequence[tuple[str, int]], *,
                                fee_rate: FeeRateLike | None = None, user: str | None = None,
                                wallet: str | None = None) -> Withdrawal:
        """Check the limits (of `user`) and the risk, select coins (of `wallet`, default: the
        custody tier of the amount) and build an unsigned PSBT paying `[(address, amount_sat), ...]`
        (or hold it for review: state `held`); `fee_rate` in sat/vB (default: the node's estimate)."""
        return read(Withdrawal, await self._use("create_withdrawal", list(payouts), _fee_rate(fee_rate),
                                                user=user, wallet=wallet))

    async def approve_withdrawal(self, withdrawal_id: str, by: str) -> WithdrawalStep:
        """An operator (`by`) releases a withdrawal the risk review held."""
        return read(WithdrawalStep, await self._use("approve_withdrawal", withdrawal_id, by))

    async def combine_withdrawal(self, withdrawal_id: str, psbt: str) -> WithdrawalStep:
        """Merge signatures made elsewhere (a PSBT of the same transaction) into the withdrawal."""
        return read(WithdrawalStep, await self._use("combine_withdrawal", withdrawal_id, psbt))

    async def sign_withdrawal(self, withdrawal_id: str, signer: str) -> WithdrawalStep:
        """Add signatures with the signer named `software`, `hwi` or `core`."""
        return read(WithdrawalStep, await self._use("sign_withdrawal", withdrawal_id, signer))

    async def broadcast_withdrawal(self, withdrawal_id: str) -> WithdrawalStep:
        return read(WithdrawalStep, await self._use("broadcast_withdrawal", withdrawal_id))

    async def bump_withdrawal(self, withdrawal_id: str, fee_rate: FeeRateLike, *,
                              add_payouts: Sequence[tuple[str, int]] = ()) -> Withdrawal:
        """RBF: a new withdrawal replacing it at `fee_rate`; `add_payouts` makes it a batch RBF."""
        return read(Withdrawal, await self._use("bump_withdrawal", withdrawal_id, _fee_rate(fee_rate),
                                                list(add_payouts)))

    async def cpfp_withdrawal(self, withdrawal_id: str, fee_rate: FeeRateLike) -> Withdrawal:
        """A child spending the withdrawal's change, lifting parent and child to `fee_rate`."""
        return read(Withdrawal, await self._use("cpfp_withdrawal", withdrawal_id, _fee_rate(fee_rate)))

    async def void_withdrawal(self, withdrawal_id: str, *, fee_rate: FeeRateLike | None = None,
                              signer: str = "software") -> VoidedWithdrawal:
        """Cancel a signed withdrawal by double-spending its inputs back to our change chain."""
        return read(VoidedWithdrawal, await self._use("void_withdrawal", withdrawal_id, _fee_rate(fee_rate),
                                                      signer))

    async def cancel_withdrawal(self, withdrawal_id: str) -> WithdrawalStep:
        """Only before it is signed: its coins are free again."""
        return read(WithdrawalStep, await self._use("cancel_withdrawal", withdrawal_id))

    async def show_withdrawal(self, withdrawal_id: str) -> Withdrawal:
        return read(Withdrawal, await self._use("show_withdrawal", withdrawal_id))

    # --- events -------------------------------------------------------------------------
    async def list_events(self, after: int = 0, limit: int = 100) -> EventPage:
        """One page of committed events after the cursor `after`, oldest first."""
        stored = await self._use_method("list_events", "stored", after, limit)
        return EventPage(tuple(stored), stored[-1].seq if stored else after)

    async def events(self, after: int = 0, *, consumer: str | None = None) -> AsyncIterator[StoredEvent]:
        """Every committed event with a seq above `after` (and above what `consumer` acknowledged),
        in commit order, waiting for new ones as long as the caller iterates. At least once:
        skip repeats by `event.id`."""
        feed = await self._use_method("event_feed", None)
        stream = feed.events(after, consumer=consumer)
        while True:
            try:
                stored = await stream.__anext__()
            except StopAsyncIteration:
                return
            except (KaccyError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - as in _use_method
                raise InternalError(f"{type(exc).__name__}: {exc}") from exc
            yield stored

    async def ack(self, consumer: str, seq: int) -> int:
        """Record that `consumer` handled every event up to `seq`; returns its acknowledged seq."""
        return await self._use_method("event_feed", "ack", consumer, seq)

    # --- the monitor --------------------------------------------------------------------
    async def nodes(self) -> Mapping[str, Any]:
        """Every Bitcoin node, checked now: `{"nodes": [{"url", "state", "height", "best_block_hash",
        "latency_ms", "version"}]}` (state primary, standby, down, lagging or diverged)."""
        return await self._use("show_nodes")

    async def monitor_tick(self) -> tuple[DomainEvent, ...]:
        """One poll of the node (payments, then withdrawals); the events it committed. A
        service normally runs `kaccy-bitcoin monitor`, which calls this on every wake-up. Each
        phase fails alone: if one failed, `MonitorPollFailed` (a `KaccyError`) is raised once the
        others ran, with their `events` and the `failed` list."""
        return tuple(await self._use("monitor_tick"))

    async def run_monitor(self, stop: asyncio.Event, *, interval: float | None = None,
                          on_state: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Run the monitors until `stop` is set, as `kaccy-bitcoin monitor` does: every
        `interval` seconds (default the poll_interval setting) and at once on the node's ZMQ
        notifications, and only while this process leads among those sharing the database (the
        others wait and take over when it dies). `on_state` hears the state lines (`started`,
        `standby`, `leader`, `lost`). The events are in the outbox: read them with `events()`."""
        from kaccy_bitcoin.bootstrap.monitoring import run_monitors

        try:
            await run_monitors(self.container, stop, interval=interval, say=on_state or (lambda _: None))
        except (KaccyError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - as in _use_method
            raise InternalError(f"{type(exc).__name__}: {exc}") from exc

    # --- Lightning ----------------------------------------------------------------------
    async def create_order_invoice(self, order_id: str, amount_msat: int, *,
                                   expiry_seconds: int | None = None) -> OrderInvoiceCreated:
        """A BOLT11 invoice paying the order over LND; the same amount again returns the same one."""
        return read(OrderInvoiceCreated, await self._use("create_order_invoice", order_id, amount_msat,
                                                         expiry_seconds))

    async def show_order_invoice(self, order_id: str) -> OrderInvoice:
        """The order's newest invoice (an open one looked up at LND first)."""
        return read(OrderInvoice, await self._use("show_order_invoice", order_id))

    async def pay_invoice(self, payment_request: str, *, max_fee_sat: int | None = None,
                          user: str | None = None) -> LightningPayment:
        """Pay a BOLT11 request over LND, through the controls (limits, risk, tier, audit), and
        wait for the final result; a risky one comes back `held`."""
        return read(LightningPayment, await self._use("pay_invoice", payment_request, max_fee_sat, user))

    async def approve_ln_payment(self, payment_id: str, by: str) -> LightningPayment:
        """An operator (`by`) releases a Lightning payout the risk review held (then `send_ln_payment`)."""
        await self._use("approve_withdrawal", payment_id, by)
        return read(LightningPayment, await self._use("show_ln_payment", payment_id))

    async def send_ln_payment(self, payment_id: str) -> LightningPayment:
        """Pay an approved Lightning payout (or ask LND again about one in flight)."""
        return read(LightningPayment, await self._use("send_ln_payment", payment_id))

    async def channels(self) -> tuple[Channel, ...]:
        answer = await self._use("list_channels")
        return tuple(read(Channel, c) for c in answer["channels"])

    async def open_channel(self, node: str, local_sat: int, *, push_sat: int = 0, fee_rate: str | int | None = None,
                           by: str = "operator") -> Mapping[str, Any]:
        """Open a channel to `PUBKEY@HOST:PORT` (audited as `by`): `{"channel_point", "state": "pending"}`."""
        return await self._use("open_channel", node, local_sat, push_sat, fee_rate, by)

    async def close_channel(self, channel_point: str, *, force: bool = False, by: str = "operator") -> Mapping[str, Any]:
        """Close a channel (`TXID:INDEX`) cooperatively, or by force (audited as `by`):
        `{"channel_point", "closing_txid"}`."""
        return await self._use("close_channel", channel_point, force, by)

    # --- wallets and custody ------------------------------------------------------------
    async def add_wallet(self, name: str, threshold: int, keys: Sequence[str], *, by: str = "operator") -> WalletAdded:
        """An M-of-N P2WSH multisig wallet of BIP48 cosigner keys (`[fp/48h/1h/0h/2h]tpub...`)."""
        return read(WalletAdded, await self._use("add_wallet", name, threshold, list(keys), by=by))

    async def list_wallets(self) -> tuple[WalletBalance, ...]:
        return tuple(read(WalletBalance, w) for w in (await self._use("list_wallets"))["wallets"])

    async def custody_status(self) -> Mapping[str, Any]:
        """Each custody tier's balance against its target and the sweep/refill proposals (the
        CLI's `custody status` answer, read-only)."""
        return MappingProxyType(await self._use("custody_status"))

    # --- layer-2 pegs ---------------------------------------------------------------------
    async def peg_accounts(self) -> Mapping[str, Any]:
        """Our L2 accounts from the signer's seed: `{"stacks": {"address"}, "rsk": {"address",
        "btc_refund_address"}}` (`signer_required` without KACCY_SIGNER_MNEMONIC)."""
        return MappingProxyType(await self._use("peg_accounts"))

    # --- controls -----------------------------------------------------------------------
    async def set_limits(self, user: str | None = None, *, daily_sat: int | None = None,
                         monthly_sat: int | None = None, single_max_sat: int | None = None,
                         hourly_sat: int | None = None, platform_daily_sat: int | None = None,
                         by: str = "operator") -> Limits:
        """Set a user's limits (given ones replace, others stay) or the platform's daily limit."""
        return read(Limits, await self._use("set_limits", user, daily_sat=daily_sat, monthly_sat=monthly_sat,
                                            single_max_sat=single_max_sat, hourly_sat=hourly_sat,
                                            platform_daily_sat=platform_daily_sat, by=by))

    async def show_limits(self, user: str | None = None) -> Limits:
        return read(Limits, await self._use("show_limits", user))

    async def verify_audit(self) -> AuditVerification:
        """Check the audit trail's hash chain (ok, or the first entry that breaks it)."""
        return read(AuditVerification, await self._use("verify_audit"))

    async def query_audit(self, subject: str | None = None, since: dt.datetime | None = None,
                          limit: int = 1000) -> tuple[AuditEntry, ...]:
        answer = await self._use("query_audit", subject, since, limit)
        return tuple(read(AuditEntry, e) for e in answer["entries"])

    # --- consolidation and analytics ----------------------------------------------------
    async def plan_consolidation(self, wallet: str = "default", *, max_inputs: int | None = None,
                                 fee_rate: FeeRateLike | None = None) -> ConsolidationPlan:
        return read(ConsolidationPlan, await self._use("plan_consolidation", wallet, max_inputs,
                                                       _fee_rate(fee_rate)))

    async def run_consolidation(self, wallet: str = "default", *, max_inputs: int | None = None,
                                fee_rate: FeeRateLike | None = None, signer: str = "software") -> ConsolidationRun:
        return read(ConsolidationRun, await self._use("run_consolidation", wallet, max_inputs,
                                                      _fee_rate(fee_rate), signer))

    async def consolidation_status(self, wallet: str = "default") -> ConsolidationStatus:
        return read(ConsolidationStatus, await self._use("show_consolidation", wallet))

    async def stats(self) -> Stats:
        return read(Stats, await self._use("stats"))
