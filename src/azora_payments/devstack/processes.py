"""Starting the real `azora-payments` command as a server or a worker process, and waiting for it.

The tests (a crash is a real SIGKILL, two servers share only what real servers share), the
benchmarks and `azora-payments dev` all start processes this one way. It lives in the package,
not in tests/, because the benchmarks run as scripts (`python bench/x.py`) that can import the
installed package but not the tests.

A process's output (stdout and stderr) goes to one log file, which the errors quote.
:meth:`ServiceProcess.stop` is SIGTERM (so coverage writes its data and the graceful shutdown
runs), then SIGKILL after a grace period.

Start-up waits on the process's own readiness (an HTTP answer, a log line) with a generous
deadline, :data:`START_SECONDS` (``AZORA_START_SECONDS``, 180 s by default): a cold `serve`
took 17-22 s at load average 14 on the shared CI machine, and fixed 30 s waits timed out there.
A process that exits first fails at once; one that is still starting at the deadline fails
with the load average and the last lines of its output.
"""

from __future__ import annotations

import contextlib
import os
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

# The checkout (scripts/bootstrap installs the package editable): processes run there, so that
# `python -m` finds `tests.…` and `bench` modules a test or a benchmark asks a worker to import.
ROOT = Path(__file__).resolve().parents[3]
COMMAND = (sys.executable, "-m", "azora_payments.cli")
START_SECONDS = float(os.environ.get("AZORA_START_SECONDS", "180"))
TAIL_LINES = 40
WORKER_STARTED = '"worker started"'


class StartTimeout(AssertionError):
    """A process did not get ready in time, or exited while starting (an AssertionError, so a
    test reports it as a failure, with the process's output, not as an error in a fixture)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def wait_http(
    url: str,
    *,
    timeout: float = START_SECONDS,
    proc: subprocess.Popen[Any] | None = None,
    ok: Callable[[int], bool] = lambda status: status < 500,
) -> None:
    """Until `url` answers with a status `ok` accepts (by default any below 500); `proc`
    exiting first raises RuntimeError at once instead of waiting to the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            if ok(httpx.get(url, timeout=2.0).status_code):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s (load average {load_average()})")


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
        # Appended: a process started again on the same log (the fault suite restarts a killed
        # server on its port) keeps the earlier run's lines above the new ones.
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [*COMMAND, *self.args], env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def name(self) -> str:
        return " ".join(["azora-payments", *self.args])

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self, tail: int | None = None) -> str:
        """The whole log, or its last `tail` characters."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def last_lines(self, count: int = TAIL_LINES) -> str:
        return "\n".join(self.output().splitlines()[-count:])

    def _failed(self, why: str) -> StartTimeout:
        return StartTimeout(
            f"{self.name} (pid {self.pid}) {why}; log {self.log_path}, "
            f"its last {TAIL_LINES} lines:\n{self.last_lines()}"
        )

    def wait_http(
        self,
        path: str = "/healthz",
        *,
        timeout: float = START_SECONDS,
        status: int | None = None,
        base: str | None = None,
    ) -> None:
        """Until `path` on this server (or on `base`, another port of it) answers below 500,
        or exactly `status`."""
        ok: Callable[[int], bool] = (
            (lambda code: code < 500) if status is None else (lambda code: code == status)
        )
        try:
            wait_http((base or self.url) + path, timeout=timeout, proc=self.proc, ok=ok)
        except RuntimeError:
            raise self._failed(
                f"exited with {self.proc.returncode} before {path} answered"
            ) from None
        except TimeoutError as exc:
            raise self._failed(f"did not answer: {exc}") from None

    def wait_output(self, text: str, *, timeout: float = START_SECONDS) -> None:
        """Until `text` is in the output (e.g. a worker's '"worker started"')."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise self._failed(f"exited with {self.proc.returncode} before logging {text!r}")
            if time.monotonic() > deadline:
                raise self._failed(
                    f"logged no {text!r} within {timeout:.0f} s (load average {load_average()})"
                )
            time.sleep(0.05)

    def wait_started(self, *, timeout: float = START_SECONDS) -> None:
        """Until a worker has logged "worker started" (it logs that at LOG_LEVEL=INFO)."""
        self.wait_output(WORKER_STARTED, timeout=timeout)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as on a power cut or an OOM kill."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

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


def run_command(
    args: Sequence[str], env: dict[str, str], *, timeout: float = 60.0, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """`azora-payments <args>` run to its end (a one-shot command: `reconcile`, `jobs retry`,
    `migrate`…), its output captured as text; its exit code is the caller's to judge."""
    return subprocess.run(
        [*COMMAND, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
    ready_path: str = "/healthz",
    timeout: float = START_SECONDS,
) -> ServiceProcess:
    """`azora-payments serve` on a free port; by default answering `ready_path` when returned
    (`/readyz` also needs the database: 200 only)."""
    port = free_port()
    server = ServiceProcess(
        ["serve", "--port", str(port), *args], env=env, log=log, cwd=cwd, port=port
    )
    status = 200 if ready_path == "/readyz" else None
    return _ready(
        server,
        (lambda: server.wait_http(ready_path, timeout=timeout, status=status)) if wait else None,
    )


def start_worker(
    env: dict[str, str],
    log: Path,
    *,
    args: Sequence[str] = (),
    cwd: Path = ROOT,
    wait: bool = True,
    timeout: float = START_SECONDS,
) -> ServiceProcess:
    """`azora-payments worker`; by default logging "worker started" when returned (the log
    line needs LOG_LEVEL=INFO or lower in `env`)."""
    worker = ServiceProcess(["worker", *args], env=env, log=log, cwd=cwd)
    return _ready(worker, (lambda: worker.wait_started(timeout=timeout)) if wait else None)


@contextlib.contextmanager
def running(
    start: Callable[[Path], ServiceProcess],
    logs: Path,
    count: int,
    *,
    prefix: str,
    wait: Callable[[ServiceProcess], None],
) -> Iterator[list[ServiceProcess]]:
    """`count` processes from `start(log)`, started side by side (one log each in `logs`,
    named `<prefix>-<n>-<random>.log`) and then waited for; always stopped."""
    started: list[ServiceProcess] = []
    try:
        run_id = uuid.uuid4().hex[:6]
        for n in range(count):
            started.append(start(logs / f"{prefix}-{n}-{run_id}.log"))
        for process in started:
            wait(process)
        yield started
    finally:
        for process in started:
            process.stop()


def running_servers(
    env: dict[str, str], logs: Path, count: int = 1, *, args: Sequence[str] = ()
) -> contextlib.AbstractContextManager[list[ServiceProcess]]:
    """`count` servers on the same environment, answering `/healthz`; always stopped."""
    return running(
        lambda log: start_server(env, log, args=args, wait=False),
        logs,
        count,
        prefix="server",
        wait=lambda server: server.wait_http(),
    )


def running_workers(
    env: dict[str, str],
    logs: Path,
    count: int = 1,
    *,
    args: Sequence[str] = (),
    wait: bool = True,
) -> contextlib.AbstractContextManager[list[ServiceProcess]]:
    """`count` workers on the same environment, each having logged "worker started" (unless
    `wait=False`: above LOG_LEVEL=INFO there is no such line); always stopped."""
    return running(
        lambda log: start_worker(env, log, args=args, wait=False),
        logs,
        count,
        prefix="worker",
        wait=(lambda worker: worker.wait_started()) if wait else (lambda worker: None),
    )
