"""`kaccy-bitcoin-fake-lnd --port P --data-dir D`: the fake LND REST server (HTTPS, macaroon).

LND's routes render LND's JSON (int64 as strings, bytes as base64, errors as
`{"code", "message", "details"}`); streaming routes write newline-delimited `{"result": ...}`.
Test-control routes live under `/_fake/` and need no macaroon.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import pathlib
import secrets
import signal
import ssl
import sys

from aiohttp import web

from kaccy_bitcoin.adapters.lnd.fake.state import FakeLndError, FakeLndState, invalid, unknown
from kaccy_bitcoin.adapters.lnd.fake.tls import ensure_certificate

STATE = web.AppKey("state", FakeLndState)
MACAROON = web.AppKey("macaroon", str)
STEP_SECONDS = 0.05     # between a payment's IN_FLIGHT and final updates
FAKE_VERSION = "0.18.3-beta commit=kaccy-fake-lnd"
FAKE_ALIAS = "kaccy-fake-lnd"
# GetInfo's `features`: feature bit -> {name, is_required, is_known}, the ones LND sets by default.
FEATURES = {str(bit): {"name": name, "is_required": bit % 2 == 0, "is_known": True}
            for bit, name in ((0, "data-loss-protect"), (5, "upfront-shutdown-script"), (7, "gossip-queries"),
                              (9, "tlv-onion"), (12, "static-remote-key"), (14, "payment-addr"),
                              (17, "multi-path-payments"), (23, "anchors-zero-fee-htlc-tx"))}


def b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode() if hex_text else ""


def unb64(text: str, what: str) -> str:
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"{what} is not base64: {exc}") from exc
    return raw.hex()


def error_body(exc: FakeLndError) -> dict:
    return {"code": exc.code, "message": exc.message, "details": []}


def render_invoice(i: dict) -> dict:
    return {
        "memo": i["memo"], "r_preimage": b64(i["r_preimage"]), "r_hash": b64(i["r_hash"]),
        "value": str(i["value_msat"] // 1000), "value_msat": str(i["value_msat"]),
        "settled": i["state"] == "SETTLED", "creation_date": str(i["creation_date"]),
        "settle_date": str(i["settle_date"]), "payment_request": i["payment_request"], "description_hash": "",
        "expiry": str(i["expiry"]), "fallback_addr": "", "cltv_expiry": str(i["cltv_expiry"]), "route_hints": [],
        "private": False, "add_index": str(i["add_index"]), "settle_index": str(i["settle_index"]),
        "amt_paid": str(i["amt_paid_msat"]), "amt_paid_sat": str(i["amt_paid_msat"] // 1000),
        "amt_paid_msat": str(i["amt_paid_msat"]), "state": i["state"], "htlcs": [], "features": {},
        "is_keysend": False, "payment_addr": b64(i["payment_addr"]), "is_amp": False, "amp_invoice_state": {},
    }


def render_payment(p: dict) -> dict:
    return {
        "payment_hash": p["payment_hash"], "value": str(p["value_msat"] // 1000),
        "creation_date": str(p["creation_time_ns"] // 10**9), "fee": str(p["fee_msat"] // 1000),
        "payment_preimage": p["payment_preimage"], "value_sat": str(p["value_msat"] // 1000),
        "value_msat": str(p["value_msat"]), "payment_request": p["payment_request"], "status": p["status"],
        "fee_sat": str(p["fee_msat"] // 1000), "fee_msat": str(p["fee_msat"]),
        "creation_time_ns": str(p["creation_time_ns"]), "htlcs": [], "payment_index": str(p["payment_index"]),
        "failure_reason": p["failure_reason"], "first_hop_custom_records": {},
    }


def render_channel(c: dict) -> dict:
    return {
        "active": c["active"], "remote_pubkey": c["remote_pubkey"], "channel_point": c["channel_point"],
        "chan_id": str(c["chan_id"]), "capacity": str(c["capacity"]), "local_balance": str(c["local_msat"] // 1000),
        "remote_balance": str(c["remote_msat"] // 1000), "commit_fee": "0", "commit_weight": "772",
        "fee_per_kw": "2500", "unsettled_balance": "0", "total_satoshis_sent": str(c["sent_msat"] // 1000),
        "total_satoshis_received": str(c["received_msat"] // 1000), "num_updates": str(c["num_updates"]),
        "pending_htlcs": [], "csv_delay": 144, "private": False, "initiator": c["initiator"],
        "chan_status_flags": "ChanStatusDefault", "local_chan_reserve_sat": str(c["capacity"] // 100),
        "remote_chan_reserve_sat": str(c["capacity"] // 100), "static_remote_key": False,
        "commitment_type": "ANCHORS", "lifetime": "0", "uptime": "0", "close_address": "",
        "push_amount_sat": "0", "thaw_height": 0, "alias_scids": [], "zero_conf": False,
        "zero_conf_confirmed_scid": "0", "peer_alias": "", "peer_scid_alias": "0", "memo": "",
    }


def amount(sat: int, msat: int | None = None) -> dict:
    return {"sat": str(sat), "msat": str(sat * 1000 if msat is None else msat)}


def integer(value: object, name: str, default: int = 0) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"{name}: invalid value {value!r}") from exc


def flag(value: str | None) -> bool:
    return (value or "false").lower() in ("true", "1")


async def json_body(request: web.Request) -> dict:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError as exc:
        raise invalid(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    return body


@web.middleware
async def lnd_middleware(request: web.Request, handler):
    state = request.app[STATE]
    if not request.path.startswith("/_fake/"):
        given = request.headers.get("Grpc-Metadata-macaroon")
        if given is None:
            return web.json_response(error_body(unknown("expected 1 macaroon, got 0")), status=500)
        if not hmac.compare_digest(given.lower(), request.app[MACAROON]):
            return web.json_response(error_body(unknown(
                "verification failed: signature mismatch after caveat verification")), status=500)
    state.expire_due()
    try:
        return await handler(request)
    except FakeLndError as exc:
        return web.json_response(error_body(exc), status=exc.status)
    except web.HTTPNotFound:
        return web.json_response({"code": 5, "message": "Not Found", "details": []}, status=404)
    except web.HTTPMethodNotAllowed:
        return web.json_response({"code": 12, "message": "Method Not Allowed", "details": []}, status=405)


async def add_invoice(request: web.Request) -> web.Response:
    body = await json_body(request)
    msat = integer(body.get("value_msat"), "value_msat")
    sat = integer(body.get("value"), "value")
    if msat and sat:
        raise invalid("value and value_msat are mutually exclusive")
    invoice = request.app[STATE].add_invoice(msat or sat * 1000, str(body.get("memo", "")),
                                             integer(body.get("expiry"), "expiry", 86400))
    return web.json_response({"r_hash": b64(invoice["r_hash"]), "payment_request": invoice["payment_request"],
                              "add_index": str(invoice["add_index"]), "payment_addr": b64(invoice["payment_addr"])})


def _hash_param(text: str, what: str) -> str:
    payment_hash = unb64(text, what)
    if len(payment_hash) != 64:
        raise invalid(f"{what}: payment hash must be exactly 32 bytes, is {len(payment_hash) // 2}")
    return payment_hash


async def lookup_invoice_v2(request: web.Request) -> web.Response:
    payment_hash = _hash_param(request.query.get("payment_hash", ""), "payment_hash")
    return web.json_response(render_invoice(request.app[STATE].invoice(payment_hash)))


async def lookup_invoice_v1(request: web.Request) -> web.Response:
    r_hash_str = request.match_info["r_hash_str"]
    try:
        raw = bytes.fromhex(r_hash_str)
    except ValueError as exc:
        raise unknown(f"unable to decode r_hash_str: {exc}") from exc
    if len(raw) != 32:
        raise unknown(f"payment hash must be exactly 32 bytes, is instead {len(raw)}")
    return web.json_response(render_invoice(request.app[STATE].invoice(raw.hex())))


async def list_invoices(request: web.Request) -> web.Response:
    q = request.query
    invoices = request.app[STATE].list_invoices(
        integer(q.get("index_offset"), "index_offset"), integer(q.get("num_max_invoices"), "num_max_invoices", 100),
        flag(q.get("reversed")), flag(q.get("pending_only")))
    first = invoices[0]["add_index"] if invoices else 0
    last = invoices[-1]["add_index"] if invoices else 0
    return web.json_response({"invoices": [render_invoice(i) for i in invoices],
                              "last_index_offset": str(last), "first_index_offset": str(first)})


async def cancel_invoice(request: web.Request) -> web.Response:
    body = await json_body(request)
    request.app[STATE].cancel_invoice(_hash_param(str(body.get("payment_hash", "")), "payment_hash"))
    return web.json_response({})


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    return response


async def _write(response: web.StreamResponse, message: dict) -> None:
    await response.write(json.dumps(message).encode() + b"\n")


async def subscribe_invoices(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    add_index = integer(request.query.get("add_index"), "add_index")
    settle_index = integer(request.query.get("settle_index"), "settle_index")
    queue: asyncio.Queue = asyncio.Queue()
    # Register and read the backlog in one step (no await between): nothing falls in between.
    state.subscribers.add(queue)
    backlog = state.backlog(add_index, settle_index)
    try:
        response = await _stream(request)
        for invoice in backlog:
            await _write(response, {"result": render_invoice(invoice)})
        while True:
            await _write(response, {"result": render_invoice(await queue.get())})
    finally:
        state.subscribers.discard(queue)


async def send_payment(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await json_body(request)
    fee_limit = (integer(body.get("fee_limit_msat"), "fee_limit_msat")
                 or integer(body.get("fee_limit_sat"), "fee_limit_sat") * 1000)
    if integer(body.get("timeout_seconds"), "timeout_seconds") <= 0:
        raise invalid("timeout_seconds must be specified")
    try:
        payment = state.start_payment(str(body.get("payment_request", "")), fee_limit,
                                      integer(body.get("amt_msat"), "amt_msat") or integer(body.get("amt"), "amt") * 1000)
    except FakeLndError as exc:
        # A streaming call that fails before its first message: the status carries the code.
        return web.json_response({"error": error_body(exc)}, status=exc.status)
    response = await _stream(request)
    if not flag(str(body.get("no_inflight_updates", "false"))):
        await _write(response, {"result": render_payment(payment)})
    await asyncio.sleep(STEP_SECONDS)
    await _write(response, {"result": render_payment(state.finish_payment(payment["payment_hash"]))})
    await response.write_eof()
    return response


async def track_payment(request: web.Request) -> web.StreamResponse:
    """`GET /v2/router/track/{payment_hash}` (TrackPaymentV2): the payment as it stands, then
    the end of the stream (this fake finishes a payment within its own send call)."""
    payment_hash = _hash_param(request.match_info["payment_hash"], "payment_hash")
    payment = request.app[STATE].data["payments"].get(payment_hash)
    if payment is None:
        return web.json_response({"error": error_body(FakeLndError(5, 404, "payment isn't initiated"))}, status=404)
    response = await _stream(request)
    await _write(response, {"result": render_payment(payment)})
    await response.write_eof()
    return response


async def decode_pay_req(request: web.Request) -> web.Response:
    d = request.app[STATE].decode(request.match_info["pay_req"])
    return web.json_response({
        "destination": d["destination"], "payment_hash": d["payment_hash"], "num_satoshis": str(d["num_msat"] // 1000),
        "timestamp": str(d["timestamp"]), "expiry": str(d["expiry"]), "description": d["description"],
        "description_hash": "", "fallback_addr": "", "cltv_expiry": str(d["cltv_expiry"]), "route_hints": [],
        "payment_addr": b64(d["payment_addr"] or ""), "num_msat": str(d["num_msat"]), "features": {},
        "blinded_paths": []})


async def list_channels(request: web.Request) -> web.Response:
    channels = request.app[STATE].channels_in("active")
    return web.json_response({"channels": [render_channel(c) for c in channels]})


def _pending(c: dict) -> dict:
    return {"remote_node_pub": c["remote_pubkey"], "channel_point": c["channel_point"], "capacity": str(c["capacity"]),
            "local_balance": str(c["local_msat"] // 1000), "remote_balance": str(c["remote_msat"] // 1000),
            "local_chan_reserve_sat": str(c["capacity"] // 100), "remote_chan_reserve_sat": str(c["capacity"] // 100),
            "initiator": "INITIATOR_LOCAL" if c["initiator"] else "INITIATOR_REMOTE", "commitment_type": "ANCHORS",
            "num_forwarding_packages": "0", "chan_status_flags": "", "private": False, "memo": ""}


async def pending_channels(request: web.Request) -> web.Response:
    state = request.app[STATE]
    height = state.chain["block_height"]
    opening = [{"channel": _pending(c), "commit_fee": "2810", "commit_weight": "772", "fee_per_kw": "2500",
                "funding_expiry_blocks": 2016 - (height - c["funding_height"])} for c in state.channels_in("pending_open")]
    closing = [{"channel": _pending(c), "limbo_balance": str(c["local_msat"] // 1000),
                "commitments": {"local_txid": "", "remote_txid": "", "remote_pending_txid": "",
                                "local_commit_fee_sat": "0", "remote_commit_fee_sat": "0",
                                "remote_pending_commit_fee_sat": "0"},
                "closing_txid": c["closing_txid"], "closing_tx_hex": ""} for c in state.channels_in("closing")]
    forced = [{"channel": _pending(c), "closing_txid": c["closing_txid"], "limbo_balance": str(c["local_msat"] // 1000),
               "maturity_height": c["maturity_height"], "blocks_til_maturity": c["maturity_height"] - height,
               "recovered_balance": "0", "pending_htlcs": [], "anchor": "LIMBO"}
              for c in state.channels_in("force_closing")]
    limbo = sum(c["local_msat"] // 1000 for c in state.channels_in("closing", "force_closing"))
    return web.json_response({"total_limbo_balance": str(limbo), "pending_open_channels": opening,
                              "pending_closing_channels": [], "pending_force_closing_channels": forced,
                              "waiting_close_channels": closing})


async def connect_peer(request: web.Request) -> web.Response:
    body = await json_body(request)
    addr = body.get("addr") if isinstance(body.get("addr"), dict) else {}
    request.app[STATE].connect_peer(str(addr.get("pubkey", "")), str(addr.get("host", "")))
    return web.json_response({"status": ""})


async def list_peers(request: web.Request) -> web.Response:
    return web.json_response({"peers": [{"pub_key": p["pub_key"], "address": p["address"], "bytes_sent": "0",
                                         "bytes_recv": "0", "sat_sent": "0", "sat_recv": "0", "inbound": False,
                                         "ping_time": "0", "sync_type": "ACTIVE_SYNC", "features": {}, "errors": [],
                                         "flap_count": 0, "last_flap_ns": "0", "last_ping_payload": ""}
                                        for p in request.app[STATE].peers()]})


async def channel_balance(request: web.Request) -> web.Response:
    channels = [c for c in request.app[STATE].data["channels"] if c["active"]]
    local = sum(c["local_msat"] for c in channels)
    remote = sum(c["remote_msat"] for c in channels)
    opening = sum(c["local_msat"] // 1000 for c in request.app[STATE].channels_in("pending_open"))
    return web.json_response({
        "balance": str(local // 1000), "pending_open_balance": str(opening),
        "local_balance": amount(local // 1000, local), "remote_balance": amount(remote // 1000, remote),
        "unsettled_local_balance": amount(0), "unsettled_remote_balance": amount(0),
        "pending_open_local_balance": amount(opening), "pending_open_remote_balance": amount(0)})


async def open_channel(request: web.Request) -> web.Response:
    body = await json_body(request)
    pubkey = unb64(str(body["node_pubkey"]), "node_pubkey") if body.get("node_pubkey") \
        else str(body.get("node_pubkey_string", ""))
    channel = request.app[STATE].open_channel(pubkey, integer(body.get("local_funding_amount"), "local_funding_amount"),
                                              integer(body.get("push_sat"), "push_sat"))
    txid, _, index = channel["channel_point"].partition(":")
    return web.json_response({"funding_txid_bytes": b64(bytes.fromhex(txid)[::-1].hex()),
                              "output_index": int(index)})


async def close_channel(request: web.Request) -> web.StreamResponse:
    try:
        closing = request.app[STATE].close_channel(request.match_info["funding_txid"],
                                                   integer(request.match_info["output_index"], "output_index"),
                                                   request.query.get("force", "false") == "true")
    except FakeLndError as exc:
        return web.json_response({"error": error_body(exc)}, status=exc.status)
    closing_b64 = b64(bytes.fromhex(closing)[::-1].hex())
    response = await _stream(request)
    # LND's stream says close_pending now and chan_close once the transaction confirms (the fake's
    # closing channels wait for blocks: /v1/channels/pending shows them meanwhile); it ends here.
    await _write(response, {"result": {"close_pending": {"txid": closing_b64, "output_index": 0}}})
    await response.write_eof()
    return response


async def get_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    chain, channels = state.chain, state.channels_in("active")
    active = sum(1 for c in channels if c["active"])
    pending = len(state.channels_in("pending_open"))
    height = chain["block_height"]
    return web.json_response({
        "version": FAKE_VERSION, "commit_hash": "", "identity_pubkey": state.pubkey, "alias": FAKE_ALIAS,
        "color": "#3399ff", "num_pending_channels": pending, "num_active_channels": active,
        "num_inactive_channels": len(channels) - active, "num_peers": len(state.peers()),
        "block_height": height, "block_hash": hashlib.sha256(f"fake-block-{height}".encode()).hexdigest(),
        "best_header_timestamp": str(chain["best_header_timestamp"]), "synced_to_chain": chain["synced_to_chain"],
        "synced_to_graph": True, "testnet": False, "chains": [{"chain": "bitcoin", "network": "regtest"}],
        "uris": [], "features": FEATURES, "require_htlc_interceptor": False,
        "store_final_htlc_resolutions": False})


async def fake_chain(request: web.Request) -> web.Response:
    body = await json_body(request)
    synced = body.get("synced_to_chain")
    if synced is not None and not isinstance(synced, bool):
        raise invalid(f"synced_to_chain must be true or false, got {synced!r}")
    height = body.get("block_height")
    view = request.app[STATE].set_chain(None if height is None else integer(height, "block_height"), synced)
    return web.json_response({"block_height": view["block_height"], "synced_to_chain": view["synced_to_chain"]})


async def fake_pay(request: web.Request) -> web.Response:
    body = await json_body(request)
    paid = body.get("amount_msat")
    invoice = request.app[STATE].settle_from_remote(str(body.get("payment_request", "")),
                                                    None if paid is None else integer(paid, "amount_msat"))
    return web.json_response(render_invoice(invoice))


async def fake_invoice(request: web.Request) -> web.Response:
    body = await json_body(request)
    invoice = request.app[STATE].add_elsewhere_invoice(integer(body.get("amount_msat"), "amount_msat"),
                                                       str(body.get("memo", "")),
                                                       integer(body.get("expiry"), "expiry", 3600))
    return web.json_response({"payment_request": invoice["payment_request"], "r_hash": b64(invoice["r_hash"]),
                              "payment_hash": invoice["r_hash"]})


def build_app(state: FakeLndState, macaroon_hex: str) -> web.Application:
    app = web.Application(middlewares=[lnd_middleware])
    app[STATE], app[MACAROON] = state, macaroon_hex
    app.router.add_get("/v1/getinfo", get_info)
    app.router.add_post("/v1/invoices", add_invoice)
    app.router.add_get("/v1/invoices", list_invoices)
    app.router.add_get("/v1/invoices/subscribe", subscribe_invoices)
    app.router.add_get("/v1/invoice/{r_hash_str}", lookup_invoice_v1)
    app.router.add_get("/v2/invoices/lookup", lookup_invoice_v2)
    app.router.add_post("/v2/invoices/cancel", cancel_invoice)
    app.router.add_post("/v2/router/send", send_payment)
    app.router.add_get("/v2/router/track/{payment_hash}", track_payment)
    app.router.add_get("/v1/payreq/{pay_req}", decode_pay_req)
    app.router.add_get("/v1/channels", list_channels)
    app.router.add_post("/v1/channels", open_channel)
    app.router.add_delete("/v1/channels/{funding_txid}/{output_index}", close_channel)
    app.router.add_get("/v1/balance/channels", channel_balance)
    app.router.add_get("/v1/channels/pending", pending_channels)
    app.router.add_post("/v1/peers", connect_peer)
    app.router.add_get("/v1/peers", list_peers)
    app.router.add_post("/_fake/pay", fake_pay)
    app.router.add_post("/_fake/invoice", fake_invoice)
    app.router.add_post("/_fake/chain", fake_chain)
    return app


def ensure_macaroon(data_dir: pathlib.Path) -> pathlib.Path:
    path = data_dir / "admin.macaroon"
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
    return path


async def serve(host: str, port: int, data_dir: pathlib.Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = ensure_certificate(data_dir)
    macaroon_path = ensure_macaroon(data_dir)
    state = FakeLndState(data_dir / "state.json")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    runner = web.AppRunner(build_app(state, macaroon_path.read_bytes().hex()), shutdown_timeout=0.5,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    bound_port = runner.addresses[0][1]
    print(json.dumps({"rest_url": f"https://{host}:{bound_port}", "tls_cert": str(cert_path.resolve()),
                      "macaroon": str(macaroon_path.resolve())}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            state.expire_due()
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kaccy-bitcoin-fake-lnd", description="A fake LND REST server for tests.")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    parser.add_argument("--data-dir", type=pathlib.Path, required=True,
                        help="where tls.cert, tls.key, admin.macaroon and state.json live")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.data_dir))
    except OSError as exc:
        print(json.dumps({"error": {"code": "fake_lnd_failed", "message": str(exc)}}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
