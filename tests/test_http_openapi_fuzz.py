"""`/openapi.json` as a client generator sees it: a served regtest instance's document passes
openapi-spec-validator, and schemathesis (every check, bounded and seeded examples) finds no
request the document allows that the server refuses, no answer it does not describe.

Left out of the fuzzing: the operations that make the server call out to a URL from the
request (registering a webhook, redelivering to one, a payjoin withdrawal's pj= endpoint) and
the WebSocket (a handshake, then no HTTP answer to check). Lightning runs without LND, so its operations answer 409
`lightning_unavailable` (documented). The wallet is unfunded: a withdrawal can only be refused
(`insufficient_funds`), never hang on the network. The settings (which statuses a schema-valid
request may meet) are tests/schemathesis.toml's."""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from kaccy_bitcoin.adapters.http_api.openapi import document
from kaccy_bitcoin.adapters.http_api.routes import ROUTES
from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env

pytestmark = pytest.mark.node

ST = str(pathlib.Path(sys.executable).parent / "st")
ROOT = pathlib.Path(__file__).parent.parent
# operationIds: the server would call the URL given; a WebSocket handshake.
# pay_to_payjoin speaks BIP78, not this API (tests/test_http_payjoin.py drives it as a sender would);
# payjoin_withdrawal calls a URL taken from the request.
NOT_FUZZED = ("create_webhook", "redeliver_webhook", "event_stream", "pay_to_payjoin", "payjoin_withdrawal")
# Bounded and deterministic in `make test`; a deeper, random run by hand:
# KACCY_FUZZ_MAX_EXAMPLES=100 KACCY_FUZZ_SEED=7 pytest tests/test_http_openapi_fuzz.py
MAX_EXAMPLES = int(os.environ.get("KACCY_FUZZ_MAX_EXAMPLES", "15"))
SEED = os.environ.get("KACCY_FUZZ_SEED")


@pytest.fixture
async def served(node, tmp_path):  # noqa: ANN001, ANN201
    shop = Shop(node, tmp_path)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    # No rate limit: the fuzzer is one client sending as fast as it can; 429 is documented anyway.
    env = service_env(shop.env, KACCY_API_RATE_LIMIT="0", KACCY_LOG_LEVEL="warning")
    key = api_key(env, "admin")
    # `bitcoin-address` (tests/schemathesis_hooks.py): the node's own addresses, one of each type.
    kinds = ("bech32", "bech32m", "p2sh-segwit", "legacy")
    addresses = [await node.call("getnewaddress", "", kind, wallet="miner") for kind in kinds]
    service = Service(env, tmp_path / "serve.log")
    yield service, key, addresses
    service.stop()


def test_the_served_document_is_valid_openapi(served) -> None:  # noqa: ANN001
    from openapi_spec_validator import validate

    service, _, _ = served
    with urllib.request.urlopen(service.url + "/openapi.json", timeout=30) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
        doc = json.loads(resp.read())
    validate(doc)   # raises with the path of the first error


def test_schemathesis_finds_nothing_the_document_does_not_say(served, tmp_path) -> None:  # noqa: ANN001
    service, key, addresses = served
    args = [ST, "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run", service.url + "/openapi.json",
            "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
            *(["--seed", SEED] if SEED else ["--generation-deterministic"]),
            "--request-timeout", "30", "--no-color", "--header", f"Authorization: Bearer {key}"]
    for operation_id in NOT_FUZZED:
        args += ["--exclude-operation-id", operation_id]
    env = {**os.environ, "KACCY_FUZZ_ADDRESSES": ",".join(addresses), "PYTHONPATH": str(ROOT)}
    # In tmp_path: schemathesis keeps its cache (.schemathesis/) in the working directory.
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=3600 if SEED else 240)
    (tmp_path / "schemathesis.txt").write_text(proc.stdout + proc.stderr)
    report = proc.stdout[-20000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report   # each failure: its check, the answer, a curl line to replay it
    ran = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert ran and ran[1] == ran[2] and int(ran[1]) >= 30 * MAX_EXAMPLES, report


async def test_what_the_first_run_found_is_answered_as_documented(served) -> None:  # noqa: ANN001
    """The failures schemathesis found first, each by hand: a 4xx naming what is missing for
    Lightning without LND (and no order half-made), 405 with Allow, the formats of the inputs."""
    service, key, addresses = served
    async with aiohttp.ClientSession() as session:
        c = Client(session, service.url, key)
        s, e = await c.post("/v1/orders", {"order_id": "ln-1", "amount_sat": 1000, "lightning_msat": 5000})
        assert (s, e["error"]["code"]) == (409, "lightning_unavailable")
        assert "KACCY_LND_REST_URL" in e["error"]["message"]
        s, _ = await c.get("/v1/orders/ln-1")
        assert s == 404                                       # nothing half-made
        s, _ = await c.request("TRACE", "/health")
        assert s == 405 and set(c.last.headers["Allow"].split(",")) >= {"GET"}
        for bad in ({"Idempotency-Key": "x" * 201}, {"Idempotency-Key": "k\u00e9"}):
            s, e = await c.post("/v1/orders", {"order_id": "o-1", "amount_sat": 1000}, headers=bad)
            assert (s, e["error"]["code"]) == (400, "invalid_idempotency_key"), bad
        s, e = await c.post("/v1/withdrawals/w/cancel", {"by": ""})
        assert (s, e["error"]["code"]) == (400, "invalid_request") and "by" in e["error"]["message"]
        s, e = await c.get("/v1/audit?since=2023-02-29")
        assert (s, e["error"]["code"]) == (400, "invalid_request")
        s, e = await c.get("/v1/audit?since=2024-02-29T12:00Z")
        assert s == 200, e
        s, e = await c.post("/v1/withdrawals", {"outputs": [{"address": addresses[0], "amount_sat": 1000}]},
                            headers={"Idempotency-Key": "w-1"})
        assert (s, e["error"]["code"]) == (422, "insufficient_funds"), e   # documented; the wallet is empty
    doc = document(ROUTES)
    since = next(p for p in doc["paths"]["/v1/audit"]["get"]["parameters"] if p["name"] == "since")
    assert re.search(since["schema"]["pattern"], "2024-02-29T12:00Z")
    assert not re.search(since["schema"]["pattern"], "2023-02-29")
