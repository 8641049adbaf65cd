"""Private PostgreSQL and Redis instances that a test may stop, freeze and restart.

The shared services on 5432/6379 belong to every suite; a test that breaks its database or
cache starts its own here, on a free port, in a temporary folder. PostgreSQL refuses to run as
root, so as root (CI) `initdb` and `pg_ctl` run as the `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES, free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _pg_tool(name: str) -> str | None:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


def require_tool(path: str | None, what: str) -> str:
    if path:
        return path
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (AZORA_REQUIRE_SERVICES=1) but is not installed")
    pytest.skip(f"{what} is not installed: this suite was skipped")


class PrivatePostgres:
    """A PostgreSQL cluster of its own: `stop(mode)`, `start()`, a URL to its `azora` database."""

    def __init__(self) -> None:
        self.initdb = require_tool(_pg_tool("initdb"), "PostgreSQL's initdb")
        self.pg_ctl = require_tool(_pg_tool("pg_ctl"), "PostgreSQL's pg_ctl")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="azora-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E",
            "UTF8",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                # A hard stop is a crash of the server, not of the machine: what is written to
                # the OS survives, so fsync may be off; commits must still reach the WAL
                # (synchronous_commit stays on) or a crash would lose acknowledged commits.
                "fsync = off\nfull_page_writes = off\n"
            )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/azora"

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, check=check, timeout=120)

    def running(self) -> bool:
        return self._run(self.pg_ctl, "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start"
        )

    def create_database(self) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute("CREATE DATABASE azora")
            finally:
                await conn.close()

        asyncio.run(create())

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """`immediate` is a crash (no checkpoint, connections cut); `smart` waits for clients."""
        flag = "-w" if wait else "-W"
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, flag, "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A `redis-server` of its own on a free port: `stop()`, `start()`, `freeze()`, `thaw()`."""

    def __init__(self) -> None:
        self.binary = require_tool(shutil.which("redis-server"), "redis-server")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def freeze(self) -> None:
        """SIGSTOP: the port stays open and accepts connections, but nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


REQUIRE_PACKAGES = os.environ.get("AZORA_REQUIRE_PACKAGES") == "1"


def require_package(path: str | None, package: str) -> str:
    """A Debian package's program: skipped plainly where missing, failed in CI
    (AZORA_REQUIRE_PACKAGES=1, where .ci/run has installed it)."""
    if path:
        return path
    if REQUIRE_PACKAGES:
        pytest.fail(f"the Debian package {package} is required (AZORA_REQUIRE_PACKAGES=1)")
    pytest.skip(f"the Debian package {package} is not installed: this test was skipped")


class PgBouncer:
    """PgBouncer in transaction mode on a free port, in front of one PostgreSQL database."""

    def __init__(self, target_url: str, *, pool_size: int = 3) -> None:
        from urllib.parse import urlsplit

        self.binary = require_package(
            shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer"), "pgbouncer"
        )
        target = urlsplit(target_url)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="azora-pgbouncer-"))
        self.ini = self.root / "pgbouncer.ini"
        self.ini.write_text(
            "[databases]\n"
            f"azora = host={target.hostname} port={target.port or 5432}"
            f" dbname={target.path.lstrip('/')} user={target.username or 'postgres'}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmin_pool_size = 0\nmax_client_conn = 500\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            "ignore_startup_parameters = extra_float_digits,search_path\n"
        )
        # PgBouncer will not run as root.
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.ini, "postgres", "postgres")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/azora"

    def start(self) -> None:
        import socket

        cmd = [self.binary, str(self.ini)]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.root / "pgbouncer.log").read_text(errors="replace")
                raise RuntimeError(f"pgbouncer exited {self.proc.returncode}:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("pgbouncer did not start")

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
