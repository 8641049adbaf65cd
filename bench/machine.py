"""What every benchmark shares: the machine's description, the PostgreSQL admin connection,
a process's CPU time, and a server's environment, start and stop (through the package's
process helper, `azora_payments.devstack.processes`, which the tests use too)."""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import signal
from pathlib import Path

import asyncpg

from azora_payments.devstack.processes import ServiceProcess, start_server
from azora_payments.devstack.processes import free_port as free_port

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TICK = os.sysconf("SC_CLK_TCK")


async def admin(sql: str) -> str:
    """Run one statement on the admin database (CREATE/DROP DATABASE …); its status line."""
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return str(await conn.execute(sql))
    finally:
        await conn.close()


async def pg_version() -> str:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def header(title: str) -> None:
    print(f"# {title}")
    print(
        f"# machine: nproc={os.cpu_count()}, cpu={cpu_model()!r}, "
        f"PostgreSQL {asyncio.run(pg_version())}, Python {platform.python_version()}, "
        f"load average {loadavg()}"
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def service_env(database_url: str, workdir: Path, **overrides: str) -> dict[str, str]:
    """A benchmark server's environment: production rules, made-up secrets, Stripe out of
    reach (unless `overrides` says where it is), the rate limits lifted (one client address
    and a few users make every request), receipts in `workdir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_"))}
    env.pop("AZORA_CRASH_AT", None)
    env.update(
        {
            "AZORA_ENV": "production",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": "sk_test_" + secrets.token_hex(12),
            "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
            "STRIPE_API_BASE": "http://127.0.0.1:9",
            "RECEIPT_STORAGE": str(workdir / "receipts"),
            "RATE_LIMIT_USER": "1000000/minute",
            "RATE_LIMIT_IP": "1000000/minute",
            **overrides,
        }
    )
    return env


def start_bench_server(env: dict[str, str], workdir: Path) -> ServiceProcess:
    """`serve` on a free port, ready (`/readyz` 200) when returned; its log `workdir/server.log`."""
    return start_server(env, workdir / "server.log", ready_path="/readyz")


def stop_server(server: ServiceProcess | None, workdir: Path) -> None:
    """Stop a benchmark's server; keep its folder (and say where its log is) if it died badly."""
    code = server.stop() if server is not None else 0
    if server is not None and code not in (0, -signal.SIGTERM):
        print(f"# server exited with {code}; its log: {server.log_path}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
