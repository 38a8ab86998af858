"""`kaccy-bitcoin run` (what `make run` starts) as a newcomer sees it: the demo, then the service,
ending with how to open the dashboard and where the API is; the node's RPC calls stay out of the
terminal at the default log level."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import aiohttp
import pytest

from tests.payments_harness import CLI, Shop

pytestmark = pytest.mark.node


async def test_run_ends_with_the_dashboard_and_the_api_and_logs_no_rpc_calls_at_info(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    env = {**shop.env, "KACCY_LOG_LEVEL": "info"}
    err_path = tmp_path / "run.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([CLI, "run", "--port", "0", "--interval", "0.5"], env=env,
                                stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line, err_path.read_text()[-3000:]
        base = json.loads(line)["listening"]
        deadline = time.monotonic() + 60
        found = None
        while found is None and time.monotonic() < deadline:
            found = re.search(r"the dashboard: open (\S+)/dashboard#key=(\S+)", err_path.read_text())
            if found is None:
                time.sleep(0.1)
        assert found, err_path.read_text()[-3000:]
        assert found.group(1) == base
        key = found.group(2)
        assert f"the API: {base}/v1" in err_path.read_text()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/dashboard") as r:
                assert r.status == 200
            async with http.get(f"{base}/v1/withdrawals?state=held",
                                headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200, await r.text()   # the demo key is an admin key
            async with http.get(f"{base}/v1/events", headers={"Authorization": f"Bearer {key}"}) as r:
                kinds = {e["kind"] for e in (await r.json())["events"]}
            assert {"payment_detected", "payment_finalized"} <= kinds
            # The service's own monitor polls (each asks the node several things) before we look.
            polls, deadline = 0.0, time.monotonic() + 30
            while polls < 3 and time.monotonic() < deadline:
                async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}) as r:
                    polls = sum(float(m.group(1)) for m in re.finditer(
                        r'^kaccy_monitor_polls_total\{result="ok"\} (\S+)$', await r.text(), re.M))
            assert polls >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    logged = []
    for text in err_path.read_text().splitlines():
        try:
            logged.append(json.loads(text))
        except ValueError:
            pass
    assert any(e.get("message") == "listening" for e in logged)
    assert not [e for e in logged if e.get("logger") == "kaccy_bitcoin.rpc"]


async def test_run_without_the_demo_still_ends_with_the_api_and_the_dashboard(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    err_path = tmp_path / "run.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([CLI, "run", "--no-demo", "--port", "0"], env=shop.env, stdout=subprocess.PIPE,
                                stderr=err)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line, err_path.read_text()[-3000:]
        base = json.loads(line)["listening"]
        deadline = time.monotonic() + 30
        while "the dashboard: open" not in err_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        said = err_path.read_text()
        assert f"the API: {base}/v1" in said and f"the dashboard: open {base}/dashboard#key=" in said, said[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
