"""The leadership lock behind PgBouncer: a session advisory lock needs a server session of its
own. In transaction pooling the sessions are shared between clients, so `serve` and `monitor`
refuse to start (`config_error` naming PgBouncer's transaction pooling); in session pooling
they work. A real PgBouncer (Debian's `pgbouncer`, scripts/setup.sh) runs on 127.0.0.1 in
front of the test PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from kaccy_bitcoin.adapters.sql.errors import SessionsShared
from kaccy_bitcoin.adapters.sql.leadership import PostgresLeadership
from kaccy_bitcoin.adapters.sql.storage import make_engine
from tests.conftest import fresh_engine
from tests.payments_harness import CLI

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
pytestmark = [
    pytest.mark.skipif(not os.environ.get("KACCY_TEST_DATABASE_URL"), reason="needs KACCY_TEST_DATABASE_URL"),
    pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgBouncer:
    """pgbouncer on 127.0.0.1 in `mode`, in front of the test database (trust auth)."""

    def __init__(self, mode: str) -> None:
        from sqlalchemy.engine import make_url

        target = make_url(os.environ["KACCY_TEST_DATABASE_URL"])
        self.port = free_port()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="kaccy-pgbouncer-"))
        self.dir.chmod(0o755)          # pgbouncer drops root for the postgres user, which reads it
        user = target.username or "postgres"
        (self.dir / "users.txt").write_text(f'"{user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n{target.database} = host={target.host or '127.0.0.1'} port={target.port or 5432} "
            f"dbname={target.database} user={user}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nauth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\npool_mode = {mode}\nunix_socket_dir =\n"
            # The lock connection sets TCP keepalives through `options`.
            "ignore_startup_parameters = options,extra_float_digits\ndefault_pool_size = 4\n")
        for f in self.dir.iterdir():
            f.chmod(0o644)
        command = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "postgres"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "wb"))
        self.url = target.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"pgbouncer did not start: {(self.dir / 'log').read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def schema(tmp_path):  # noqa: ANN001, ANN201
    fresh_engine("postgresql", tmp_path).dispose()   # the tables at HEAD, made directly


@pytest.mark.parametrize("mode", ["transaction", "statement"])
async def test_the_lock_refuses_shared_sessions(schema, mode: str) -> None:  # noqa: ANN001
    bouncer = PgBouncer(mode)
    engine = make_engine(bouncer.url, check_schema=False)
    lock = PostgresLeadership(engine)
    try:
        with pytest.raises(SessionsShared, match="PgBouncer in transaction or statement pooling") as refused:
            await lock.verify()
        assert refused.value.code == "config_error" and refused.value.exit_status == 2
        with pytest.raises(SessionsShared):   # taking the lock checks it too
            await lock.try_acquire()
    finally:
        await lock.release()
        engine.dispose()
        bouncer.stop()


async def test_the_lock_works_through_session_pooling(schema) -> None:  # noqa: ANN001
    bouncer = PgBouncer("session")
    engine = make_engine(bouncer.url, check_schema=False)
    first, second = PostgresLeadership(engine), PostgresLeadership(engine)
    try:
        await first.verify()
        assert await first.try_acquire() and await first.held()
        assert not await second.try_acquire()          # one leader at a time
        await first.release()
        assert await second.try_acquire()
    finally:
        await first.release()
        await second.release()
        engine.dispose()
        bouncer.stop()


@pytest.mark.node
async def test_serve_refuses_to_start_behind_transaction_pooling(node, schema, tmp_path) -> None:  # noqa: ANN001
    from tests.payments_harness import Shop
    from tests.service_harness import Service, service_env, until

    transaction, session = PgBouncer("transaction"), PgBouncer("session")
    try:
        shop = Shop(node, tmp_path, KACCY_DATABASE_URL=session.url)
        env = service_env(shop.env)
        for args in (["serve", "--port", "0"], ["monitor"]):
            proc = subprocess.run([CLI, *args], env={**env, "KACCY_DATABASE_URL": transaction.url},
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr[-2000:])
            error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
            assert error["code"] == "config_error" and "PgBouncer" in error["message"], error
            assert "pool_mode = session" in error["message"] and "Traceback" not in proc.stderr
        service = Service(env, tmp_path / "serve.log")     # through session pooling: it leads
        try:
            await until(lambda: asyncio.sleep(0, any(line.get("message") == "monitor leader"
                                                     for line in service.logs())), timeout=60)
        finally:
            assert service.stop() == 0
    finally:
        transaction.stop()
        session.stop()
