"""One way to run the real `azora-payments` command in a test: a server or a worker process.

Every test that needs a real process (a crash is a real SIGKILL, two servers share only what
real servers share) starts it with :func:`start_server` or :func:`start_worker`, or
:class:`ServiceProcess` for another subcommand. The output goes to a log file that assertion
messages quote; :meth:`ServiceProcess.stop` is SIGTERM (so coverage writes its data, and the
graceful shutdown runs) and SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
COMMAND = (sys.executable, "-m", "azora_payments.cli")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(
    url: str, *, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Until `url` answers below 500; `proc` exiting first is an error, not a wait to the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


class ServiceProcess:
    """`python -m azora_payments.cli <args>` with `env`, its output in `log`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str],
        log: Path,
        cwd: Path = ROOT,
        port: int | None = None,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port is not None else ""
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [*COMMAND, *self.args], env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self, tail: int | None = None) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def wait_http(self, path: str = "/healthz", *, timeout: float = 60.0) -> None:
        try:
            wait_http(self.url + path, timeout=timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(
                f"{' '.join(self.args)} did not answer: {exc}\n{self.output(4000)}"
            ) from None

    def wait_output(self, text: str, *, timeout: float = 60.0) -> None:
        """Until `text` is in the output (e.g. a worker's '"worker started"')."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{' '.join(self.args)} exited {self.proc.returncode}:\n{self.output(4000)}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in time:\n{self.output(4000)}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as on a power cut or an OOM kill."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 20.0) -> int:
        """SIGTERM, SIGKILL after `grace` seconds; the exit code."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _ready(process: ServiceProcess, wait: Callable[[], None] | None) -> ServiceProcess:
    """`process` once `wait()` returns; stopped (its log kept) if it never gets there."""
    if wait is not None:
        try:
            wait()
        except BaseException:
            process.stop()
            raise
    return process


def start_server(
    env: dict[str, str],
    log: Path,
    *,
    args: Sequence[str] = (),
    cwd: Path = ROOT,
    wait: bool = True,
    timeout: float = 60.0,
) -> ServiceProcess:
    """`azora-payments serve` on a free port; by default answering `/healthz` when returned."""
    port = free_port()
    server = ServiceProcess(
        ["serve", "--port", str(port), *args], env=env, log=log, cwd=cwd, port=port
    )
    return _ready(server, (lambda: server.wait_http(timeout=timeout)) if wait else None)


def start_worker(
    env: dict[str, str],
    log: Path,
    *,
    args: Sequence[str] = (),
    cwd: Path = ROOT,
    wait: bool = True,
    timeout: float = 60.0,
) -> ServiceProcess:
    """`azora-payments worker`; by default logging "worker started" when returned."""
    worker = ServiceProcess(["worker", *args], env=env, log=log, cwd=cwd)
    started = '"worker started"'
    return _ready(worker, (lambda: worker.wait_output(started, timeout=timeout)) if wait else None)


@contextlib.contextmanager
def running_servers(
    env: dict[str, str], logs: Path, count: int = 1, *, args: Sequence[str] = ()
) -> Iterator[list[ServiceProcess]]:
    """`count` servers on the same environment, started side by side (logs in `logs`, one
    file each); always stopped."""
    started: list[ServiceProcess] = []
    try:
        for _ in range(count):
            log = logs / f"server-{uuid.uuid4().hex[:6]}.log"
            started.append(start_server(env, log, args=args, wait=False))
        for server in started:
            server.wait_http()
        yield started
    finally:
        for server in started:
            server.stop()
