"""The whole service on private parts, for breaking them: a PostgreSQL cluster and a Redis of
its own, the Stripe emulator, an SMTP server (aiosmtpd, in this process), N `serve` and M
`worker` processes. Used by the fault suite and by `bench/soak.py`.

Every part can be stopped hard and started again on the same port, so clients and processes
see the same address come back, as after a restart in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from azora_payments.db.migrate import upgrade
from azora_payments.devstack.emulator import EmulatorProcess
from tests.conftest import JWT_SECRET, STRIPE_KEY, WEBHOOK_SECRET, free_port
from tests.private_services import PrivatePostgres, PrivateRedis
from tests.receipts.conftest import SmtpServer

ROOT = Path(__file__).resolve().parents[2]
SENDER = "receipts@shop.example"


class Process:
    """One `azora-payments` process, its output appended to a log file across restarts."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "azora_payments.cli", *self.argv],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no answer to what is in flight, as on an OOM kill."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        if self.proc is not None:
            self.proc.wait(30)

    def terminate(self, timeout: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def output(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class Server(Process):
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, ["serve", "--port", str(self.port)], env, log)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer /healthz:\n{self.output()}")


class Stack:
    """Start with `start()`, always `stop()` (SIGTERM, so coverage is written)."""

    def __init__(
        self,
        root: Path,
        *,
        servers: int = 2,
        workers: int = 2,
        # Shorter than production's 30 s / 10 s, so the suite stays short; the rule is the same.
        lease: float = 6.0,
        heartbeat: float = 2.0,
    ) -> None:
        self.root = root
        self.pg = PrivatePostgres()
        self.redis = PrivateRedis()
        self.smtp = SmtpServer()
        self.emulator = EmulatorProcess(webhook_delay=0.0, startup_timeout=120.0)
        self.server_count = servers
        self.worker_count = workers
        self.lease = lease
        self.heartbeat = heartbeat
        self.servers: list[Server] = []
        self.workers: list[Process] = []

    @property
    def database_url(self) -> str:
        return self.pg.url

    @property
    def stripe_url(self) -> str:
        return self.emulator.base_url

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("STRIPE_", "JWT_", "SMTP_", "REDIS_", "DATABASE_", "RATE_"))
        }
        env.update(
            AZORA_ENV="test",
            DATABASE_URL=self.pg.url,
            REDIS_URL=self.redis.url,
            STRIPE_SECRET_KEY=STRIPE_KEY,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE=self.emulator.base_url,
            STRIPE_MAX_NETWORK_RETRIES="1",
            STRIPE_TIMEOUT_SECONDS="5",
            JWT_SECRET=JWT_SECRET,
            SMTP_URL=self.smtp.url,
            RECEIPT_FROM_EMAIL=SENDER,
            MERCHANT_NAME="Azora Fault Shop",
            MERCHANT_ADDRESS="1 Quay Street",
            RECEIPT_STORAGE=str(self.root / "receipts"),
            # The load comes from one address and a few users: the limits are not the subject.
            RATE_LIMIT_USER="100000/minute",
            RATE_LIMIT_IP="100000/minute",
            # A dead server's key is taken over after this; short so the suite stays short
            # (still longer than a Stripe call with its retry: 2 x 5 s).
            IDEMPOTENCY_LOCK_SECONDS="12",
            WORKER_POLL_SECONDS="0.2",
            LOG_LEVEL="WARNING",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        return env

    def start(self) -> None:
        self.pg.start()
        self.pg.create_database()
        upgrade(self.pg.url)
        self.redis.start()
        self.smtp.start()
        self.emulator.start()
        env = self.env()
        for n in range(self.server_count):
            self.servers.append(Server(f"server-{n}", env, self.root / f"server-{n}.log"))
        for n in range(self.worker_count):
            argv = [
                "worker",
                "--lease",
                str(self.lease),
                "--heartbeat",
                str(self.heartbeat),
                "--grace",
                "10",
            ]
            self.workers.append(Process(f"worker-{n}", argv, env, self.root / f"worker-{n}.log"))
        for process in [*self.servers, *self.workers]:
            process.start()
        for server in self.servers:
            server.wait_ready()

    def restart_server(self, index: int) -> None:
        server = self.servers[index]
        server.start()
        server.wait_ready()

    def stop(self) -> None:
        for process in [*self.servers, *self.workers]:
            process.terminate()
        self.emulator.stop()
        self.smtp.stop()
        self.redis.stop()
        self.pg.destroy()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output(3000)}" for p in [*self.servers, *self.workers])
