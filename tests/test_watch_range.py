"""The watch range: order creation never stops, whatever the node already watches (its keypool
top-up, other processes, a wallet set up by an older version), and no write lock is held while
the node is asked."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import threading

import pytest

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend
from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError, RpcConnectionError, RpcError
from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.orders import CreateOrder, ShowOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.errors import InvalidOrder, OrderConflict
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.ports.addresses import RECEIVE
from tests.conftest import STORAGE_KINDS, fresh_engine
from tests.payments_harness import CLI, Shop

GAP = 20


async def watched_range(node, shop: Shop) -> list[int]:  # noqa: ANN001
    """The [start, end] the node watches of the shop's receive descriptor (the node lists it
    with its own checksum and hardened markers: 84h for 84')."""
    ours = deriver(shop).descriptor(RECEIVE).replace("'", "h")
    listed = await node.call("listdescriptors", wallet=shop.env["KACCY_BITCOIN_RPC_WALLET"])
    (found,) = [d["range"] for d in listed["descriptors"] if d["desc"].split("#")[0] == ours]
    return found


def deriver(shop: Shop) -> Bip32AddressDeriver:
    return Bip32AddressDeriver(shop.vpub, Network.REGTEST, origin_fingerprint=shop.env.get("KACCY_XPUB_FINGERPRINT"))


def index_of(shop: Shop, address: str, upto: int) -> int:
    return deriver(shop).addresses(RECEIVE, 0, upto).index(address)


# -- on the real node ---------------------------------------------------------------

@pytest.mark.node
async def test_1100_orders_through_the_library_cross_the_keypool(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    c = shop.container()
    backend = await c.gateways.chain()
    addresses = []
    for i in range(1100):
        create = await c.services.create_order()   # per order, as an embedding service would
        addresses.append((await create(f"lib-{i}", Satoshis(10_000)))["address"])
    calls = backend.rpc.stats["calls"]
    assert addresses == deriver(shop).addresses(RECEIVE, 0, 1100)   # each index once, in order
    start, end = await watched_range(node, shop)
    assert start == 0 and end >= 1099 + GAP
    # The note of the watched range spares the node: about one visit per GAP orders past the keypool.
    assert calls <= 40, f"{calls} RPC calls for 1,100 orders"
    await node.send(addresses[-1], 10_000)
    events = await (await c.services.poll_payments())()
    assert [(e.kind, e.subject) for e in events] == [("payment_detected", "lib-1099")]
    await c.shutdown_resources()


@pytest.mark.node
async def test_25_cli_orders_one_after_another(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    code, out = shop.cli("order", "create", "too-late", "--amount-sat", "1000",
                         "--expires-in", "999999999999", check=False)
    assert code == 2 and out["error"]["code"] == "invalid_order"
    assert "--expires-in 999999999999" in out["error"]["message"]
    orders = [shop.order(f"cli-{i}", 20_000 + i) for i in range(25)]   # more than the gap limit (20)
    # The refused order took no index: the first one got index 0.
    assert [o["address"] for o in orders] == deriver(shop).addresses(RECEIVE, 0, 25)
    assert (await watched_range(node, shop))[1] >= 24 + GAP
    await node.send(orders[-1]["address"], 20_024)
    events = shop.poll()
    assert [(e["kind"], e["subject"]) for e in events] == [("payment_detected", "cli-24")]


@pytest.mark.node
@pytest.mark.parametrize("storage", [k for k in STORAGE_KINDS if k != "memory"])
async def test_24_cli_processes_at_once(node, tmp_path, storage: str) -> None:
    shop = Shop(node, tmp_path)
    if storage == "postgresql":
        fresh_engine("postgresql", tmp_path).dispose()
        shop.env["KACCY_DATABASE_URL"] = os.environ["KACCY_TEST_DATABASE_URL"]
    procs = [subprocess.Popen([CLI, "order", "create", f"burst-{i}", "--amount-sat", "30000"], env=shop.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(24)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, f"{stdout} {stderr[-2000:]}"
        outs.append(json.loads(stdout))
    addresses = {o["address"] for o in outs}
    assert addresses == set(deriver(shop).addresses(RECEIVE, 0, 24))   # 24 distinct, no gap
    last = max(outs, key=lambda o: index_of(shop, o["address"], 24))
    assert (await watched_range(node, shop))[1] >= 23 + GAP
    await node.send(last["address"], 30_000)
    events = shop.poll()
    assert [(e["kind"], e["subject"]) for e in events] == [("payment_detected", last["order_id"])]


@pytest.mark.node
async def test_a_wallet_set_up_by_the_older_version_keeps_working(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, KACCY_XPUB_FINGERPRINT="73c5da0a")   # key origins in the descriptor
    wallet = shop.env["KACCY_BITCOIN_RPC_WALLET"]
    # What the older version left: the receive descriptor imported over [0, 39] (which the node
    # topped up to its keypool) and its own note of that range in the database.
    await node.call("createwallet", wallet, True, True, "", False, True, True)
    normal = (await node.call("getdescriptorinfo", deriver(shop).descriptor(RECEIVE)))["descriptor"]
    (imported,) = await node.call("importdescriptors", [{"desc": normal, "range": [0, 39], "timestamp": "now",
                                                         "active": False}], wallet=wallet)
    assert imported["success"]
    first = shop.container()
    uow_factory = first.storage.uow()
    with uow_factory() as uow:
        uow.cursors.set("watch-range:0", MonitorCursor(block_hash="", height=40))
        uow.commit()
    before = await watched_range(node, shop)

    create = await first.services.create_order()
    orders = [await create(f"old-{i}", Satoshis(15_000)) for i in range(25)]
    orders.append(shop.order("old-25", 15_000))        # a second process, beside the first
    orders.append(shop.order("old-26", 15_000))
    orders += [await create(f"old-{i}", Satoshis(15_000)) for i in range(27, 42)]
    await first.shutdown_resources()
    restarted = shop.container()
    create = await restarted.services.create_order()
    orders += [await create(f"old-{i}", Satoshis(15_000)) for i in range(42, 45)]

    assert [o["address"] for o in orders] == deriver(shop).addresses(RECEIVE, 0, 45)
    after = await watched_range(node, shop)
    assert after[0] == 0 and after[1] >= max(before[1], 44 + GAP)
    with uow_factory() as uow:
        assert uow.cursors.get("watch-range:0") == MonitorCursor(block_hash="", height=40)   # left alone
    await node.send(orders[-1]["address"], 15_000)
    assert [(e.kind, e.subject) for e in await (await restarted.services.poll_payments())()] == [
        ("payment_detected", "old-44")]
    await restarted.shutdown_resources()


@pytest.mark.node
async def test_processes_widening_one_range_at_once_all_succeed(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, KACCY_XPUB_FINGERPRINT="73c5da0a")
    descriptor = deriver(shop).descriptor(RECEIVE)
    wallet = shop.env["KACCY_BITCOIN_RPC_WALLET"]
    backends = [BitcoinCoreBackend(node.rpc, wallet=wallet) for _ in range(8)]
    # Some below the node's keypool (1000), some past it: imports that lose a race to a wider
    # one, or find the wallet busy rescanning, read the range again and retry.
    ends = [30, 1200, 45, 1500, 999, 1100, 60, 1400]
    results = await asyncio.gather(*(b.ensure_watching([(descriptor, e)]) for b, e in zip(backends, ends)))
    assert all(got >= want for (got,), want in zip(results, ends))
    assert await watched_range(node, shop) == [0, 1500]
    assert await backends[0].ensure_watching([(descriptor, 10)]) == [1500]    # never narrows


# -- with a fake chain ----------------------------------------------------------------

class LockProbe(FakeChain):
    """Records, whenever it is asked to watch, whether the order is committed and whether a
    writer could take the SQLite write lock; can fail like an unreachable node."""

    def __init__(self, db_path: str, descriptor_addresses) -> None:  # noqa: ANN001
        super().__init__(descriptor_addresses)
        self.db_path = db_path
        self.seen: list[tuple[bool, int]] = []
        self.fail = False
        self.calls = 0

    async def ensure_watching(self, descriptors):  # noqa: ANN001, ANN201
        self.calls += 1
        probe = sqlite3.connect(self.db_path, timeout=0, isolation_level=None)
        try:
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                free = True
            except sqlite3.OperationalError:
                free = False
            orders = probe.execute("SELECT count(*) FROM kaccy_orders").fetchone()[0]
        finally:
            probe.close()
        self.seen.append((free, orders))
        if self.fail:
            raise RpcConnectionError("the node could not be reached")
        return await super().ensure_watching(descriptors)


@pytest.fixture
def probe_setup(tmp_path):  # noqa: ANN001, ANN201
    from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

    seed = Bip39SeedGenerator("abandon " * 11 + "about").Generate()
    vpub = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()
    d = Bip32AddressDeriver(vpub, Network.REGTEST)
    path = f"{tmp_path}/probe.db"
    chain = LockProbe(path, lambda desc, end: d.addresses(RECEIVE, 0, end + 1))
    store = SqlUnitOfWorkFactory(make_engine(f"sqlite:///{path}"))
    create = CreateOrder(store, d, WatchRange(d, chain, GAP), ManualClock(), PaymentSettings())
    yield chain, store, create
    store.engine.dispose()


async def test_the_node_is_asked_after_the_commit_without_the_write_lock(probe_setup) -> None:
    chain, _, create = probe_setup
    await create("first", Satoshis(1_000))
    assert chain.seen == [(True, 1)]


async def test_the_node_is_asked_once_per_gap_not_per_order(probe_setup) -> None:
    chain, _, create = probe_setup
    orders = [await create(f"o-{i}", Satoshis(1_000)) for i in range(100)]
    assert {o["address"] for o in orders} <= chain.watched
    # Each visit reaches GAP past what is needed, or half again as far once that is more, and
    # the next one starts (in the background) while half a gap is still left: 4 visits for 100
    # orders (one per GAP would be 5), each reaching further than the one before.
    assert [free for free, _ in chain.seen] == [True] * 4
    assert chain.seen[0][1] == 1 and [n for _, n in chain.seen] == sorted({n for _, n in chain.seen})
    assert max(chain.watch_ends.values()) >= 99 + GAP


async def test_a_failed_watch_heals_when_the_order_is_created_again(probe_setup) -> None:
    chain, store, create = probe_setup
    chain.fail = True
    with pytest.raises(RpcConnectionError):
        await create("retry", Satoshis(1_000))
    view = await ShowOrder(store)("retry")     # committed before the node was asked
    assert view.address not in chain.watched
    chain.fail = False
    again = await create("retry", Satoshis(1_000))
    assert again["address"] == view.address and view.address in chain.watched


async def test_an_expiry_too_far_ahead_is_refused_and_takes_no_index(probe_setup) -> None:
    chain, store, create = probe_setup
    for seconds in (10**12, 10**20):
        with pytest.raises(InvalidOrder, match="--expires-in .* too far ahead"):
            await create("far", Satoshis(1_000), expires_in=seconds)
    with store() as uow:
        assert uow.addresses.issued(RECEIVE) == 0 and uow.requests.get("far") is None
    assert chain.calls == 0
    near = await create("near", Satoshis(1_000), expires_in=3600)
    assert near["address"] in chain.watched
    with store() as uow:
        assert uow.addresses.get(near["address"]).index == 0


class ScriptedNode:
    """Stands in for BitcoinRpc: answers importdescriptors from a script, lists `listed` (the
    node's own spelling of each descriptor and its range), and a successful import adds `grant`."""

    def __init__(self, imports: list, listed: dict, grant: dict | None = None) -> None:  # noqa: ANN001
        self.imports, self.listed, self.grant = imports, listed, grant or {}
        self.calls: list[str] = []

    async def call(self, method: str, *params, wallet=None):  # noqa: ANN001, ANN002, ANN201
        self.calls.append(method)
        if method == "loadwallet":
            return {"name": params[0]}
        if method == "listdescriptors":
            return {"descriptors": [{"desc": d, "range": r} for d, r in self.listed.items()]}
        answer = self.imports.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if all(r["success"] for r in answer):
            self.listed.update(self.grant)
        return answer

    async def batch(self, calls, wallet=None):  # noqa: ANN001, ANN201
        return [{"descriptor": params[0] + "#checksum"} for _, params in calls]


DESC = "wpkh([73c5da0a/84'/1'/0']tpubFAKE/0/*)"


async def test_a_wallet_busy_rescanning_is_asked_again() -> None:
    busy = RpcError("importdescriptors", -4, "Wallet is currently rescanning. Abort existing rescan or wait.")
    node = ScriptedNode([busy, [{"success": True}]], {},
                        grant={"wpkh([73c5da0a/84h/1h/0h]tpubFAKE/0/*)#other": [0, 999]})   # topped up
    backend = BitcoinCoreBackend(node, wallet="w")  # type: ignore[arg-type]
    assert await backend.ensure_watching([(DESC, 40)]) == [999]
    assert node.calls.count("importdescriptors") == 2


async def test_a_descriptor_the_node_never_lists_is_an_error_not_a_loop() -> None:
    refused = [{"success": False, "error": {"code": -8, "message": "new range must include current range = [0,999]"}}]
    node = ScriptedNode([refused, refused], {"wpkh(somethingelse/0/*)#abcd": [0, 999]})
    backend = BitcoinCoreBackend(node, wallet="w")  # type: ignore[arg-type]
    with pytest.raises(BitcoinCoreError, match="does not list"):
        await backend.ensure_watching([(DESC, 40)])
    assert node.calls.count("importdescriptors") == 1


async def test_two_creations_of_one_order_id_at_once_both_answer_with_the_one_committed(uow_factory) -> None:  # noqa: ANN001
    """The index is taken in a unit of work of its own; another process creating the same order
    id in between commits first, and this creation answers with that order (its index is left
    unused). Another amount for that order id is still a conflict."""
    from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

    seed = Bip39SeedGenerator("abandon " * 11 + "about").Generate()
    vpub = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()
    d = Bip32AddressDeriver(vpub, Network.REGTEST)
    chain = FakeChain(lambda desc, end: d.addresses(RECEIVE, 0, end + 1))
    elsewhere = (MemoryUnitOfWorkFactory(uow_factory.store) if isinstance(uow_factory, MemoryUnitOfWorkFactory)
                 else SqlUnitOfWorkFactory(uow_factory.engine))   # another process: its own caches
    other = CreateOrder(elsewhere, d, WatchRange(d, chain, GAP), ManualClock(), PaymentSettings())
    answered: list[dict] = []

    class RacedDeriver:
        """Between the two units of work of the creation, the other process creates the order."""

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(d, name)

        def address(self, chain_index: int, index: int) -> str:
            if not answered:
                runs = threading.Thread(target=lambda: answered.append(asyncio.run(other("race", Satoshis(5_000)))))
                runs.start()
                runs.join()
            return d.address(chain_index, index)

    create = CreateOrder(uow_factory, RacedDeriver(), WatchRange(d, chain, GAP), ManualClock(), PaymentSettings())
    mine = await create("race", Satoshis(5_000))
    assert mine == answered[0]
    with uow_factory() as uow:
        assert uow.addresses.issued(RECEIVE) == 2                      # ours was taken, and left unused
        assert uow.addresses.get(mine["address"]).index == 1            # the other process took index 1
        assert uow.requests.get("race").address == mine["address"]
    with pytest.raises(OrderConflict):
        await CreateOrder(uow_factory, RacedDeriver(), WatchRange(d, chain, GAP), ManualClock(),
                          PaymentSettings())("race", Satoshis(6_000))


async def test_a_crash_between_taking_the_index_and_writing_the_order_loses_nothing(uow_factory) -> None:  # noqa: ANN001
    """The process dies after the index committed and before the order did: the retry of the same
    order id takes a new index and answers with it; the first index stays unused, none is used
    twice, and the node watches the address handed out."""
    from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

    seed = Bip39SeedGenerator("abandon " * 11 + "about").Generate()
    vpub = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()
    d = Bip32AddressDeriver(vpub, Network.REGTEST)
    chain = FakeChain(lambda desc, end: d.addresses(RECEIVE, 0, end + 1))

    class Killed(BaseException):
        """Stands for kill -9: nothing after it runs in that process."""

    class DyingDeriver:
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(d, name)

        def address(self, chain_index: int, index: int) -> str:
            raise Killed

    with pytest.raises(Killed):
        await CreateOrder(uow_factory, DyingDeriver(), WatchRange(d, chain, GAP), ManualClock(),
                          PaymentSettings())("crash", Satoshis(7_000))
    with uow_factory() as uow:
        assert uow.addresses.issued(RECEIVE) == 1 and uow.requests.get("crash") is None
    again = await CreateOrder(uow_factory, d, WatchRange(d, chain, GAP), ManualClock(), PaymentSettings())(
        "crash", Satoshis(7_000))
    assert again["address"] == d.address(RECEIVE, 1) and again["address"] in chain.watched
    with uow_factory() as uow:
        assert uow.addresses.issued(RECEIVE) == 2
        assert [e.index for e in uow.addresses.entries()] == [1]
