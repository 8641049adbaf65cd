"""The whole service on private parts, for breaking them: a PostgreSQL cluster and a Redis of
its own, the Stripe emulator, an SMTP server (aiosmtpd, in this process), N `serve` and M
`worker` processes. Used by the fault suite and by `bench/soak.py`.

Every part can be stopped hard and started again on the same port, so clients and processes
see the same address come back, as after a restart in production.
"""

from __future__ import annotations

import mailbox
import os
import socket
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from azora_payments.db.migrate import upgrade
from azora_payments.devstack.emulator import EmulatorProcess
from azora_payments.devstack.processes import ServiceProcess
from tests.conftest import JWT_SECRET, STRIPE_KEY, WEBHOOK_SECRET, free_port
from tests.private_services import PrivatePostgres, PrivateRedis

ROOT = Path(__file__).resolve().parents[2]
SENDER = "receipts@shop.example"


class Process:
    """One `azora-payments` process that can be killed and started again on the same
    arguments (a server on the same port), its output appended to one log across restarts.
    Each run is a `ServiceProcess`, the one way tests start the service's processes."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path, port: int | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.port = port
        self.run: ServiceProcess | None = None
        self.kills = 0

    def start(self) -> None:
        self.run = ServiceProcess(self.argv, env=self.env, log=self.log, port=self.port)

    @property
    def alive(self) -> bool:
        return self.run is not None and self.run.returncode is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no answer to what is in flight, as on an OOM kill."""
        if self.run is None:
            return
        if self.alive:
            self.kills += 1
        self.run.kill()

    def terminate(self, timeout: float = 40.0) -> int | None:
        return None if self.run is None else self.run.stop(grace=timeout)

    def output(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class Server(Process):
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(name, ["serve", "--port", str(port)], env, log, port=port)

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.run is not None
        self.run.wait_http("/healthz", timeout=timeout, status=200)


class SmtpProcess:
    """An SMTP server (aiosmtpd's own command) in a process of its own, keeping what it is sent
    in a Maildir. Stopped, its port refuses, as a real outage's would; and an in-process server
    stopped under the workers' connections left sockets to this process's collector, whose
    warnings then failed whatever test ran next."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.maildir = root / "maildir"
        self.log = root / "smtp.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        if not self.maildir.exists():
            return []
        found = []
        for raw in mailbox.Maildir(self.maildir, factory=None, create=False).itervalues():
            parsed = message_from_bytes(raw.as_bytes(), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "aiosmtpd", "-n", "-u"]
        command += ["-l", f"127.0.0.1:{self.port}", "-c", "aiosmtpd.handlers.Mailbox"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*command, str(self.maildir)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    if probe.recv(3) == b"220":
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SMTP server did not start: {self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # an outage: no goodbye to the connected workers
            self.proc.wait(30)


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
        self.smtp = SmtpProcess(root)
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
