"""A SOCKS5 proxy for the tests (RFC 1928, CONNECT), run in a thread of its own: it records
every CONNECT request (address type, host, port) and relays only to `localhost` (resolved here,
as a proxy does) and 127.0.0.1; any other host is refused with reply 0x02, "connection not allowed
by ruleset", without a lookup. With `credentials` it asks for a user and password (RFC 1929) and
records each login."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading

import attrs

ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4


@attrs.frozen
class Connect:
    atyp: int
    host: str
    port: int


class SocksProxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.logins: list[tuple[str, str]] = []
        self.connects: list[Connect] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="socks-proxy", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return f"socks5h://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            version, count = await reader.readexactly(2)
            methods = await reader.readexactly(count)
            wanted = 0 if self.credentials is None else 2
            if version != 5 or wanted not in methods:
                writer.write(b"\x05\xff")
                return
            writer.write(bytes([5, wanted]))
            if wanted == 2:
                _, size = await reader.readexactly(2)
                user = (await reader.readexactly(size)).decode()
                size = (await reader.readexactly(1))[0]
                password = (await reader.readexactly(size)).decode()
                self.logins.append((user, password))
                if (user, password) != self.credentials:
                    writer.write(b"\x01\x01")
                    return
                writer.write(b"\x01\x00")
            version, command, _, atyp = await reader.readexactly(4)
            if atyp == ATYP_IPV4:
                host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
            elif atyp == ATYP_DOMAIN:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            elif atyp == ATYP_IPV6:
                host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
            else:
                writer.write(b"\x05\x08\x00\x01" + bytes(6))   # address type not supported
                return
            (port,) = struct.unpack("!H", await reader.readexactly(2))
            self.connects.append(Connect(atyp, host, port))
            if command != 1:
                writer.write(b"\x05\x07\x00\x01" + bytes(6))   # command not supported
                return
            if host not in ("localhost", "127.0.0.1"):   # nothing else is looked up or connected to
                writer.write(b"\x05\x02\x00\x01" + bytes(6))
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.write(b"\x05\x05\x00\x01" + bytes(6))   # connection refused
                return
            writer.write(b"\x05\x00\x00\x01" + bytes(6))
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


class CountingListener:
    """A TCP port that accepts and counts connections (and closes them): the target a request
    must never reach directly."""

    def __init__(self) -> None:
        self.accepted = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
