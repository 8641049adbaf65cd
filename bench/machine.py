"""What every benchmark shares: the machine's description, the PostgreSQL admin connection,
a process's CPU time, and starting a server on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import asyncpg
import httpx

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def stop_server(
    server: subprocess.Popen[bytes] | None, log: IO[bytes] | None, workdir: Path
) -> None:
    """Stop a benchmark's server; keep its folder (and say where its log is) if it died badly."""
    if server is not None and server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if log is not None:
        log.close()
    if server is not None and server.returncode not in (0, -signal.SIGTERM):
        print(f"# server exited with {server.returncode}; its log: {workdir / 'server.log'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
