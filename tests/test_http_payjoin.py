"""PayJoin (BIP78 v1) receiving, through a running `serve` over real HTTP. The sender is a node
wallet driven by the test (walletcreatefundedpsbt + walletprocesspsbt make the original); the
checks a BIP78 sender makes on the proposal are written here, not taken from our code."""
from __future__ import annotations

import asyncio
import signal
import sqlite3
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest

from kaccy_bitcoin.adapters.bitcoin_core.launcher import free_port
from tests.payments_harness import Shop, kinds
from tests.service_harness import Service, api_key, service_env

pytestmark = pytest.mark.node
CORS = "Access-Control-Allow-Origin"


class Receiver:
    """One shop with payjoin on: its `serve` (no monitor: the test runs `monitor --once`), driven
    over HTTP with one key (each CLI process costs seconds on a loaded machine)."""

    def __init__(self, node, tmp_path, fallback_after: str = "600") -> None:  # noqa: ANN001
        self.node, self.tmp_path = node, tmp_path
        self.port = free_port()
        self.shop = Shop(node, tmp_path, KACCY_PAYJOIN_URL=f"http://127.0.0.1:{self.port}",
                         KACCY_PAYJOIN_FALLBACK_AFTER=fallback_after, KACCY_API_MAX_BODY="300")
        self.shop.env["KACCY_SIGNER_MNEMONIC"] = self.shop.words
        self.watch = self.shop.env["KACCY_BITCOIN_RPC_WALLET"]
        self.key = api_key(service_env(self.shop.env), "read", "orders")
        self.start()

    def start(self) -> None:
        self.service = Service(service_env(self.shop.env), self.tmp_path / "serve.log", "--port", str(self.port),
                               "--no-monitor")

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.key}"}) as session:
            async with session.request(method, self.service.url + path, json=body) as resp:
                answer = await resp.json()
                assert resp.status in (200, 201), answer
                return answer

    async def order(self, order_id: str, amount: int) -> tuple[str, str]:
        """(address, pj path) of a new order, from its bip21 as a sender reads it."""
        made = await self.api("POST", "/v1/orders", {"order_id": order_id, "amount_sat": amount})
        query = dict(p.split("=", 1) for p in made["bip21"].split("?", 1)[1].split("&"))
        pj = urlsplit(unquote(query["pj"]))
        assert f"{pj.scheme}://{pj.netloc}" == self.service.url and pj.path.startswith("/pj/")
        assert order_id not in pj.path
        return made["address"], pj.path

    async def show(self, order_id: str) -> dict[str, Any]:
        return await self.api("GET", f"/v1/orders/{order_id}")

    async def events(self) -> list[dict[str, Any]]:
        return (await self.api("GET", "/v1/events?after=0&limit=1000"))["events"]

    async def fund(self, sat: int) -> str:
        """A confirmed coin of ours (paid to an order of its own)."""
        address, _ = await self.order(f"funding-{sat}", sat)
        await self.node.send(address, sat)
        await self.node.mine(1)
        return address

    def reserved(self) -> list[tuple[str, int, str]]:
        with sqlite3.connect(self.tmp_path / "shop.db") as db:
            return db.execute("SELECT txid, vout, withdrawal_id FROM kaccy_coin_reservations").fetchall()


async def bech32_sender(node, sat: int) -> str:  # noqa: ANN001
    """A node wallet holding one confirmed P2WPKH coin (Knots hands out legacy addresses by default)."""
    name = await node.fresh_wallet()
    await node.send(await node.call("getnewaddress", "", "bech32", wallet=name), sat)
    await node.mine(1)
    return name


async def original(node, sender: str, address: str, sat: int, *, finalize: bool = True,  # noqa: ANN001
                   fee_rate: int = 2) -> tuple[str, dict[str, Any]]:
    """A sender's original: funded, signed and (unless told) finalized, with its UTXOs."""
    funded = await node.call("walletcreatefundedpsbt", [], [{address: str(Decimal(sat) / 10**8)}], 0,
                             {"fee_rate": fee_rate, "replaceable": True, "change_type": "bech32"}, wallet=sender)
    signed = await node.call("walletprocesspsbt", funded["psbt"], True, "ALL", False, finalize, wallet=sender)
    return signed["psbt"], await node.call("decodepsbt", signed["psbt"])


async def post(session: aiohttp.ClientSession, url: str, body: str | bytes, **query: str) -> tuple[int, Any, Any]:
    async with session.post(url, data=body, params=query, headers={"Content-Type": "text/plain"}) as resp:
        text = await resp.text()
        assert resp.headers.get(CORS) == "*", (resp.status, text)
        return resp.status, (await resp.json(content_type=None) if resp.status != 200 else text), resp


def _sat(btc: Any) -> int:
    return int(Decimal(str(btc)) * 10**8)


def check_proposal(orig: dict[str, Any], prop: dict[str, Any], payee: str, max_fee: int, fee_index: int) -> int:
    """BIP78's sender checklist on the proposal; returns the receiver's input index."""
    ot, pt = orig["tx"], prop["tx"]
    assert (pt["version"], pt["locktime"]) == (ot["version"], ot["locktime"])
    theirs = {(i["txid"], i["vout"]): i["sequence"] for i in ot["vin"]}
    added = [n for n, i in enumerate(pt["vin"]) if (i["txid"], i["vout"]) not in theirs]
    assert len(added) == 1 and len(pt["vin"]) == len(ot["vin"]) + 1
    assert len({i["sequence"] for i in pt["vin"]}) == 1
    for n, (i, pin) in enumerate(zip(pt["vin"], prop["inputs"])):
        assert "bip32_derivs" not in pin and "partial_signatures" not in pin
        if n in added:
            assert "final_scriptwitness" in pin and "witness_utxo" in pin
        else:
            assert theirs[(i["txid"], i["vout"])] == i["sequence"]
            assert "final_scriptwitness" not in pin and "final_scriptSig" not in pin
            assert "witness_utxo" not in pin and "non_witness_utxo" not in pin   # stripped: only ours has it
    for o in prop["outputs"]:
        assert "bip32_derivs" not in o
    assert len(pt["vout"]) == len(ot["vout"])
    for a, b in zip(ot["vout"], pt["vout"]):
        assert a["scriptPubKey"]["hex"] == b["scriptPubKey"]["hex"]
        if a["scriptPubKey"].get("address") == payee:
            assert _sat(b["value"]) > _sat(a["value"])
        elif a["n"] == fee_index:
            assert 0 <= _sat(a["value"]) - _sat(b["value"]) <= max_fee
        else:
            assert a["value"] == b["value"]
    return added[0]


async def test_a_payjoin_to_an_order_is_counted_at_the_customers_amount(node, tmp_path) -> None:  # noqa: ANN001
    r = Receiver(node, tmp_path)
    try:
        await r.fund(300_000)
        coins = await node.call("listunspent", 1, 9999999, [], wallet=r.watch)
        sender = await bech32_sender(node, 2_000_000)
        address, path = await r.order("pj-1", 150_000)
        orig_b64, orig = await original(node, sender, address, 150_000)
        fee_index = next(o["n"] for o in orig["tx"]["vout"] if o["scriptPubKey"].get("address") != address)
        async with aiohttp.ClientSession() as session:
            status, proposal, resp = await post(session, r.service.url + path, orig_b64, v="1",
                                                additionalfeeoutputindex=str(fee_index),
                                                maxadditionalfeecontribution="200")
            assert status == 200 and resp.content_type == "text/plain", proposal
        prop = await node.call("decodepsbt", proposal)
        ours = check_proposal(orig, prop, address, 200, fee_index)
        added = prop["tx"]["vin"][ours]
        (coin,) = [c for c in coins if (c["txid"], c["vout"]) == (added["txid"], added["vout"])]
        assert [(t, v) for t, v, _ in r.reserved()] == [(coin["txid"], coin["vout"])]

        # The sender restores its inputs' UTXOs (its wallet knows them), signs, checks the fee, sends.
        signed = await node.call("walletprocesspsbt", proposal, True, "ALL", False, True, wallet=sender)
        assert signed["complete"]
        final = await node.call("decodepsbt", signed["psbt"])
        assert final["fee"] >= orig["fee"]
        assert _sat(final["fee"]) * orig["tx"]["vsize"] >= _sat(orig["fee"]) * (final["tx"]["vsize"] - 1)
        txid = await node.call("sendrawtransaction", signed["hex"])
        await node.mine(1)
        polled = r.shop.poll()
        shown = await r.show("pj-1")
        assert shown["received_sat"] == 150_000 and shown["match"] == "exact" and shown["txids"] == [txid]
        pay_vout = next(o for o in prop["tx"]["vout"] if o["scriptPubKey"].get("address") == address)
        contributed = _sat(pay_vout["value"]) - 150_000
        assert 0 < contributed <= _sat(coin["amount"])
        assert shown["payjoin"] == {"txid": txid, "contributed_sat": contributed}
        assert "order_paid" in kinds(polled)
        paid = next(e for e in polled if e["kind"] == "order_paid" and e["order_id"] == "pj-1")
        assert paid["confirmed_sat"] == 150_000 and paid["txids"] == [txid]
        # Our coin is spent; the enlarged output is a coin of our wallet.
        assert await node.call("gettxout", coin["txid"], coin["vout"]) is None
        mine = {(u["txid"], u["vout"]): _sat(u["amount"]) for u in
                await node.call("listunspent", 1, 9999999, [], wallet=r.watch)}
        assert mine[(txid, pay_vout["n"])] == 150_000 + contributed
        events = await r.events()
        proposed = [e for e in events if e["kind"] == "payjoin_proposed"]
        assert len(proposed) == 1 and proposed[0]["proposal_txid"] == txid
        assert proposed[0]["original_txid"] == orig["tx"]["txid"]
        assert not [e for e in events if e["kind"] in ("unexpected_spend", "payment_to_unknown_address")]
        # The chain settled it: the coin is released, in the same round.
        assert "payjoin_coin_released" in kinds(polled) and r.reserved() == []
    finally:
        r.service.stop()


async def test_each_refusal(node, tmp_path) -> None:  # noqa: ANN001
    r = Receiver(node, tmp_path)
    try:
        sender = await bech32_sender(node, 3_000_000)
        address, path = await r.order("refusals", 100_000)
        url = r.service.url + path
        good, _ = await original(node, sender, address, 100_000)
        async with aiohttp.ClientSession() as session:
            async def refused(body: str | bytes, code: str, **query: str) -> dict[str, Any]:
                status, answer, _ = await post(session, url, body, **query)
                assert status == 400 and answer["errorCode"] == code, answer
                return answer

            # No confirmed coin of ours yet.
            await refused(good, "unavailable")
            assert (await refused(good, "version-unsupported", v="2"))["supported"] == [1]
            await refused("this is not a psbt", "original-psbt-rejected")
            unfinalized, _ = await original(node, sender, address, 100_000, finalize=False)
            assert "not finalized" in (await refused(unfinalized, "original-psbt-rejected"))["message"]
            elsewhere, _ = await original(node, sender, await node.call("getnewaddress", wallet="miner"), 100_000)
            await refused(elsewhere, "original-psbt-rejected")
            status, answer, _ = await post(session, r.service.url + "/pj/no-such-token", good)
            assert status == 404
            # The /pj limit is BIP78's 100 kB, whatever KACCY_API_MAX_BODY (300 here) says.
            status, answer, _ = await post(session, url, b"A" * 100_001)
            assert status == 413
            await refused(b"A" * 50_000, "original-psbt-rejected")

            await r.fund(400_000)
            # Inputs of another script type than our coins (Knots' wallets default to P2PKH).
            legacy = await node.fresh_wallet(500_000)
            other_type, _ = await original(node, legacy, address, 100_000)
            await refused(other_type, "unavailable")
            # The node's mempool refuses it (it is there already): rejected.
            sent = await node.call("finalizepsbt", good)
            mempool_b64, _ = await original(node, sender, address, 100_000)
            await node.call("sendrawtransaction", (await node.call("finalizepsbt", mempool_b64))["hex"])
            await refused(mempool_b64, "original-psbt-rejected")
            assert sent["complete"]
            # The order now has a payment (once the monitor saw it).
            r.shop.poll()
            await refused(good, "original-psbt-rejected")

            # A proposal for another order, then its inputs offered again to a third: probing.
            address2, path2 = await r.order("second", 120_000)
            probe_sender = await bech32_sender(node, 1_000_000)
            first, decoded = await original(node, probe_sender, address2, 120_000)
            status, proposal, _ = await post(session, r.service.url + path2, first)
            assert status == 200, proposal
            address3, path3 = await r.order("third", 120_000)
            (spent,) = decoded["tx"]["vin"]
            again = await node.call("walletcreatefundedpsbt", [{"txid": spent["txid"], "vout": spent["vout"]}],
                                    [{address3: "0.0012"}], 0, {"fee_rate": 2, "add_inputs": False, "change_type": "bech32"},
                                    wallet=probe_sender)
            again = (await node.call("walletprocesspsbt", again["psbt"], True, "ALL", False, True,
                                     wallet=probe_sender))["psbt"]
            status, answer, _ = await post(session, r.service.url + path3, again)
            assert status == 400 and answer["errorCode"] == "original-psbt-rejected"
            assert "earlier original" in answer["message"]
            # The same order again: it has a proposal already.
            status, answer, _ = await post(session, r.service.url + path2, first)
            assert status == 400 and answer["errorCode"] == "original-psbt-rejected"
    finally:
        r.service.stop()


async def test_fallback_broadcast_after_a_restart(node, tmp_path) -> None:  # noqa: ANN001
    """The proposal is never sent: killed between proposal and fallback, nothing is lost; the
    monitor broadcasts the original, and the coin is released once it confirms."""
    r = Receiver(node, tmp_path, fallback_after="1")
    try:
        await r.fund(250_000)
        sender = await bech32_sender(node, 1_000_000)
        address, path = await r.order("fallback", 80_000)
        orig_b64, orig = await original(node, sender, address, 80_000)
        async with aiohttp.ClientSession() as session:
            status, proposal, _ = await post(session, r.service.url + path, orig_b64)
            assert status == 200, proposal
        (held,) = r.reserved()
        r.service.stop(signal.SIGKILL)
        r.start()   # the same database, a new process
        async with aiohttp.ClientSession() as session:
            status, answer, _ = await post(session, r.service.url + path, orig_b64)
            assert status == 400 and "already proposed" in answer["message"]
        await asyncio.sleep(1.1)
        polled = r.shop.poll()
        assert "payjoin_fallback_broadcast" in kinds(polled)
        await node.settle()
        assert orig["tx"]["txid"] in await node.call("getrawmempool")
        assert r.reserved() == [held]   # until the chain says which transaction spent the sender's inputs
        await node.mine(1)
        polled = r.shop.poll()
        assert "payjoin_coin_released" in kinds(polled) and r.reserved() == []
        shown = await r.show("fallback")
        assert shown["received_sat"] == 80_000 and shown["txids"] == [orig["tx"]["txid"]]
        assert shown["payjoin"] is None and shown["status"] != "pending"
    finally:
        r.service.stop()

