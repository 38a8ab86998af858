"""`kaccy-bitcoin serve` as its own process, driven over HTTP the way a client does."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
from typing import Any

import aiohttp

from tests.payments_harness import CLI


class Service:
    """One `serve` process on a free port; its JSON logs go to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: pathlib.Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([CLI, "serve", "--port", "0", "--interval", "0.3", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()   # the first line says where it listens
        if not line:
            self.proc.wait(30)
            raise AssertionError(f"serve exited {self.proc.returncode}: {log_path.read_text()[-3000:]}")
        self.announced = json.loads(line)   # {"listening": url} (and "onion" with --onion)
        self.url = self.announced["listening"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self._log.close()
        return self.proc.returncode

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


def api_key(env: dict[str, str], *scopes: str) -> str:
    args = [a for s in scopes for a in ("--scope", s)]
    proc = subprocess.run([CLI, "apikey", "create", *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer = json.loads(proc.stdout)
    assert set(answer) == {"key_id", "key", "scopes"} and answer["scopes"] == list(scopes)
    return answer["key"]


class Client:
    """JSON over HTTP with one key: `await c.get(path)` -> (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: str | None) -> None:
        self.session = session
        self.url = url
        self.key = key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**h, **(extra or {})}

    async def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                      raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.session.request(method, self.url + path, data=data,
                                        headers=self.headers({"Content-Type": "application/json", **(headers or {})})
                                        ) as resp:
            text = await resp.text()
            self.last = resp
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)


async def until(check: Any, timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll `await check()` until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; last value {value!r}")
        await asyncio.sleep(every)


def service_env(shop_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**shop_env, "KACCY_LOG_LEVEL": "info", **extra}


def clean_env() -> dict[str, str]:
    return dict(os.environ)
