"""Writes tests/data/release_fixture.json: a database written by the last release before
schema migrations (commit d6e1f8c) — the rows of every table, and what that release's own
repositories read back from them. tests/test_migrations.py upgrades those rows and reads
them back with the current code.

It must run with that release's code as `kaccy_bitcoin` (it refuses any other):

    git worktree add /tmp/kaccy-release d6e1f8c
    mkdir -p /tmp/release-pkg/kaccy_bitcoin && touch /tmp/release-pkg/kaccy_bitcoin/__init__.py
    for d in domain ports adapters application bootstrap; do
        ln -s /tmp/kaccy-release/$d /tmp/release-pkg/kaccy_bitcoin/$d; done
    BITCOIND=$(scripts/install-bitcoind.sh) PYTHONPATH=/tmp/release-pkg \\
        .venv/bin/python tests/data/make_release_fixture.py
    git worktree remove /tmp/kaccy-release

It starts its own regtest node and uses the release's use cases, as its CLI would: orders
paid into every payment state (pending, unconfirmed, confirmed, full_confirmed, finalized,
failed; under- and overpaid; a payment replaced by a fee bump), and withdrawals in every
PSBT state (created, partially_signed, signed, finalized, broadcast, rejected), with their
addresses, cursor, audit log and coin reservations.

`snapshot` is shared with the test, which applies it to the current code's repositories:
it reads only what the release's domain objects had, by name.
"""
from __future__ import annotations

import datetime as dt
import json
import pathlib
from typing import Any

OUTPUT = pathlib.Path(__file__).with_name("release_fixture.json")
RELEASE = "d6e1f8c"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


# -- what a release's repositories read back, as plain JSON ---------------------------------
def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.timezone.utc).isoformat()


def _order(r: Any) -> dict[str, Any]:
    return {"order_id": r.order_id, "address": r.address, "amount_sat": r.amount.value,
            "created_at": _time(r.created_at), "tolerance_sat": r.tolerance.value,
            "expires_at": _time(r.expires_at), "label": r.label, "derivation_index": r.derivation_index}


def _payment(p: Any) -> dict[str, Any]:
    outputs = sorted(p.outputs.values(), key=lambda o: (o.outpoint.txid.value, o.outpoint.vout))
    return {"order_id": p.order_id, "state": p.state.name, "history": [t.to_dict() for t in p.history],
            "event_seq": p.event_seq, "reported_match": list(p.reported_match) if p.reported_match else None,
            "finality_alerted": p.finality_alerted,
            "outputs": [{"txid": o.outpoint.txid.value, "vout": o.outpoint.vout, "amount_sat": o.amount.value,
                         "confirmations": o.confirmations, "first_seen": _time(o.first_seen),
                         "block_hash": o.block_hash, "status": o.status.value,
                         "replaced_by": o.replaced_by.value if o.replaced_by else None} for o in outputs]}


# The release's Withdrawal fields; the test checks each one the current class still has.
WITHDRAWAL_FIELDS = ("created_at", "inputs", "outputs", "fee", "psbt", "state", "history", "txid", "replaces",
                     "replaced_by", "reject_reason", "child_of", "rebroadcasts", "last_rebroadcast_at",
                     "stuck_alerted", "confirmed_reported")


def _withdrawal(w: Any) -> dict[str, Any]:
    values = {
        "created_at": lambda: _time(w.created_at),
        "inputs": lambda: [{"txid": i.outpoint.txid.value, "vout": i.outpoint.vout, "amount_sat": i.amount.value,
                            "chain": i.chain, "index": i.index} for i in w.inputs],
        "outputs": lambda: [{"address": o.address, "amount_sat": o.amount.value, "change": o.change}
                            for o in w.outputs],
        "fee": lambda: w.fee.value,
        "state": lambda: w.state.name,
        "history": lambda: [t.to_dict() for t in w.machine.history],
        "txid": lambda: w.txid.value if w.txid else None,
        "last_rebroadcast_at": lambda: _time(w.last_rebroadcast_at),
    }
    out: dict[str, Any] = {"withdrawal_id": w.withdrawal_id}
    for name in WITHDRAWAL_FIELDS:
        if name in values:
            out[name] = values[name]()
        elif hasattr(w, name):
            out[name] = getattr(w, name)
    return out


def snapshot(uow: Any, order_ids: list[str], withdrawal_ids: list[str], cursor_names: list[str]) -> dict[str, Any]:
    """Everything the repositories of `uow` read back, in the release's terms."""
    orders = uow.requests.get_many(order_ids)
    payments = uow.payments.get_many(order_ids)
    reserved = uow.reservations.reserved()
    return {
        "orders": {i: _order(orders[i]) for i in sorted(orders)},
        "payments": {i: _payment(payments[i]) for i in sorted(payments)},
        "withdrawals": {i: _withdrawal(uow.withdrawals.get(i)) for i in sorted(withdrawal_ids)},
        "addresses": [{"address": e.address, "chain": e.chain, "index": e.index, "label": e.label,
                       "order_id": e.order_id, "purpose": e.purpose, "used": e.used} for e in uow.addresses.entries()],
        "issued": {str(chain): uow.addresses.issued(chain) for chain in (0, 1)},
        "cursors": {name: [c.block_hash, c.height] for name in cursor_names if (c := uow.cursors.get(name))},
        "events": [{"id": e.id, "kind": e.kind, "subject": e.subject, "at": _time(e.at), "data": e.data}
                   for e in uow.audit.events(limit=100_000)],
        "reservations": sorted([op.txid.value, op.vout, w] for op, w in reserved.items()),
    }


def encode_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: {"datetime": _time(v)} if isinstance(v, dt.datetime) else v for k, v in row.items()}


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: dt.datetime.fromisoformat(v["datetime"]) if isinstance(v, dict) and set(v) == {"datetime"} else v
            for k, v in row.items()}


# -- the scenario, run by the release's code --------------------------------------------------
def _refuse_other_code() -> None:
    import importlib.util

    if importlib.util.find_spec("kaccy_bitcoin.adapters.sql.schema") is not None:
        raise SystemExit(f"kaccy_bitcoin is not release {RELEASE} (it has schema revisions): see the docstring")


async def _scenario(workdir: pathlib.Path) -> dict[str, Any]:
    from bip_utils import Bip39MnemonicGenerator, Bip39SeedGenerator, Bip39WordsNum, Bip84, Bip84Coins
    from bitcointx import ChainParams
    from sqlalchemy import select

    from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcConnectionError
    from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
    from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
    from kaccy_bitcoin.adapters.memory.clock import ManualClock
    from kaccy_bitcoin.adapters.sql.tables import metadata
    from kaccy_bitcoin.application.withdrawals import BroadcastWithdrawal, SignWithdrawal
    from kaccy_bitcoin.bootstrap.config import load
    from kaccy_bitcoin.bootstrap.container import build
    from kaccy_bitcoin.domain.bitcoin import Network
    from kaccy_bitcoin.domain.money import FeeRate, Satoshis
    from kaccy_bitcoin.domain.psbt import parse_psbt
    from kaccy_bitcoin.ports.signer import SignResult

    node = RegtestNode(workdir / "node")
    node.start()
    rpc = BitcoinRpc(node.url, user=node.user, password=node.password)
    try:
        await rpc.call("createwallet", "miner")
        miner = await rpc.call("getnewaddress", wallet="miner")

        async def mine(blocks: int) -> None:
            await rpc.call("generatetoaddress", blocks, miner)
            await rpc.call("syncwithvalidationinterfacequeue")

        async def pay(address: str, sat: int) -> str:
            txid = await rpc.call("sendtoaddress", address, Satoshis(sat).to_btc(), "", "", False, True,
                                  wallet="miner")
            await rpc.call("syncwithvalidationinterfacequeue")
            return txid

        await mine(101)
        words = str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12))
        account = Bip84.FromSeed(Bip39SeedGenerator(words).Generate(), Bip84Coins.BITCOIN_TESTNET)
        vpub = account.Purpose().Coin().Account(0).PublicKey().ToExtended()
        db = workdir / "release.db"
        container = build(load({
            "KACCY_NETWORK": "regtest", "KACCY_BITCOIN_RPC_URL": node.url, "KACCY_BITCOIN_RPC_USER": node.user,
            "KACCY_BITCOIN_RPC_PASSWORD": node.password, "KACCY_BITCOIN_RPC_WALLET": "release-watch",
            "KACCY_XPUB": vpub, "KACCY_SIGNER_MNEMONIC": words, "KACCY_DATA_DIR": str(workdir),
            "KACCY_DATABASE_URL": f"sqlite:///{db}", "KACCY_TOLERANCE_SAT": "10"}))
        clock = ManualClock(T0)
        container.gateways.clock.override(clock)

        async def service(name: str) -> Any:
            provided = getattr(container.services, name)()
            return await provided if hasattr(provided, "__await__") else provided

        create_order, tick = await service("create_order"), await service("monitor_tick")
        orders: dict[str, dict[str, Any]] = {}

        async def order(order_id: str, sat: int, **kw: Any) -> str:
            orders[order_id] = await create_order(order_id, Satoshis(sat), **kw)
            clock.advance(1)
            return orders[order_id]["address"]

        async def poll() -> None:
            await tick()
            clock.advance(30)

        # Payments: depth 6 finalized, 3 full_confirmed, 1 confirmed, 0 unconfirmed; under- and
        # overpaid; a payment whose transaction is replaced by a fee bump; pending; failed.
        await order("o-failed", 25_000, expires_in=60, label="never paid")
        for n in range(1, 9):
            await pay(await order(f"fund-{n}", 200_000, label="funds for withdrawals"), 200_000)
        await pay(await order("o-finalized", 50_000, label="finalized"), 50_000)
        await mine(3)
        await poll()
        await pay(await order("o-full", 60_000), 60_000)
        await mine(2)
        await poll()
        await pay(await order("o-confirmed", 70_000), 70_000)
        await pay(await order("o-overpaid", 80_000), 90_000)
        await mine(1)
        await poll()
        await pay(await order("o-underpaid", 40_000), 30_000)
        bumped = await pay(await order("o-replaced", 45_000, label="fee-bumped payment"), 45_000)
        await order("o-pending", 35_000, expires_in=7 * 86_400, label="waiting")
        await poll()
        await rpc.call("bumpfee", bumped, wallet="miner")
        await rpc.call("syncwithvalidationinterfacequeue")
        await poll()

        # Withdrawals, each through the release's use cases.
        create_w, sign_w = await service("create_withdrawal"), await service("sign_withdrawal")
        cancel_w, broadcast_w = await service("cancel_withdrawal"), await service("broadcast_withdrawal")
        rate = FeeRate.from_sat_per_vb("2")
        software = container.gateways.software_signer()
        network = Network.parse("regtest")

        class FirstInputOnly:
            """A signer that holds the key of the first input only (a second signer is missing)."""

            name = "software"

            async def sign(self, psbt: str) -> SignResult:
                signed = await software.sign(psbt)
                with ChainParams(network.chain_params):
                    parsed = parse_psbt(network, signed.psbt)
                    for inp in parsed.inputs[1:]:
                        inp.partial_sigs.clear()
                    return SignResult(parsed.to_base64(), False, 1)

        class UnreachableNode:
            """The node goes away between FINALIZED (committed first) and the broadcast."""

            def __getattr__(self, name: str) -> Any:
                return getattr(container.gateways.chain(), name)

            async def test_accept(self, raw: bytes) -> Any:
                raise RpcConnectionError("testmempoolaccept: node unreachable (generator)")

        withdrawals: dict[str, str] = {}

        async def withdraw(name: str, sat: int) -> str:
            made = await create_w([(miner, sat)], rate)
            withdrawals[name] = made["withdrawal_id"]
            clock.advance(5)
            return made["withdrawal_id"]

        await withdraw("created", 100_000)
        partial = await withdraw("partially_signed", 350_000)
        await SignWithdrawal(container.storage.uow(), {"software": FirstInputOnly}, clock)(partial, "software")
        await sign_w(await withdraw("signed", 110_000), "software")
        finalized = await withdraw("finalized", 120_000)
        await sign_w(finalized, "software")
        try:
            await BroadcastWithdrawal(container.storage.uow(), UnreachableNode(), clock, network)(finalized)
        except RpcConnectionError:
            pass
        sent = await withdraw("broadcast", 130_000)
        await sign_w(sent, "software")
        await broadcast_w(sent)
        await rpc.call("syncwithvalidationinterfacequeue")
        await cancel_w(await withdraw("rejected", 20_000))
        await mine(1)
        await pay(await order("o-unconfirmed", 55_000), 55_000)
        clock.advance(120)   # o-failed expires
        await poll()

        with container.storage.engine().connect() as conn:
            tables = {t.name: [encode_row(dict(r._mapping)) for r in
                               conn.execute(select(t).order_by(*t.primary_key.columns))]
                      for t in metadata.sorted_tables}
        cursor_names = [row["name"] for row in tables["kaccy_cursors"]]
        with container.storage.uow()() as uow:
            read_back = snapshot(uow, sorted(orders), sorted(withdrawals.values()), cursor_names)
        await container.shutdown_resources()
        return {"release": RELEASE, "cursor_names": cursor_names, "order_ids": sorted(orders),
                "withdrawal_ids": withdrawals, "tables": tables, "read_back": read_back}
    finally:
        await rpc.close()
        node.stop()


def main() -> None:
    import asyncio
    import tempfile

    _refuse_other_code()
    with tempfile.TemporaryDirectory() as tmp:
        fixture = asyncio.run(_scenario(pathlib.Path(tmp)))
    OUTPUT.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    states = sorted({p["state"] for p in fixture["read_back"]["payments"].values()})
    print(f"wrote {OUTPUT}: payments {states}, withdrawals {sorted(fixture['withdrawal_ids'])}")


if __name__ == "__main__":
    main()
