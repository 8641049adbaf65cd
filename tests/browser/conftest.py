"""Browser suites: Debian's headless Chromium driven by Selenium, real `serve` and `worker`
processes on the Stripe emulator, an SMTP server that keeps what it is sent, and screenshots.

Shared by the console and checkout suites. Where Chromium or its driver is missing the suites
skip with a plain message; with AZORA_REQUIRE_PACKAGES=1 (set by .ci/run) they fail instead.

    browser          a fresh headless Chromium (its own profile), closed after the test
    stack            serve + worker + emulator + SMTP, started for the test (`start_stack` for
                     other settings); `stack.url`, `stack.settings`, `stack.smtp.inbox`, …
    shoot(b, name)   PNGs at desktop (1280) and phone (390) width under test-output/screenshots/
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from azora_payments.config import Settings
from azora_payments.devstack.emulator import EmulatorProcess, configure_webhook
from azora_payments.devstack.processes import ServiceProcess, start_server, start_worker
from tests.conftest import (
    WEBHOOK_SECRET,
    emulator_settings,
    server_env,
)
from tests.receipts.conftest import SmtpServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AZORA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AZORA_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRE_PACKAGES = os.environ.get("AZORA_REQUIRE_PACKAGES") == "1"
SCREENSHOTS = Path(os.environ.get("AZORA_TEST_OUTPUT", ROOT / "test-output")) / "screenshots"
PUBLISHABLE_KEY = "pk_test_" + "azora" * 6
CHECKOUT_ENV = {"CHECKOUT_ENABLED": "true", "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY}
DESKTOP_WIDTH = 1280
PHONE_WIDTH = 390
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def require_package(present: bool, what: str) -> None:
    """Skip (or fail, when AZORA_REQUIRE_PACKAGES=1) a test whose Debian package is missing."""
    if present:
        return
    message = f"{what} is not installed (apt-get install chromium chromium-driver)"
    if REQUIRE_PACKAGES:
        pytest.fail(f"{message}, and AZORA_REQUIRE_PACKAGES=1 makes it required")
    pytest.skip(f"{message}: the browser suite was skipped")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


# ---------------------------------------------------------------- the browser


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium with a fresh profile; Selenium is given the driver's path, so its
    Selenium Manager never looks for a driver on the network."""
    require_package(_executable(CHROMIUM), f"Chromium ({CHROMIUM})")
    require_package(_executable(CHROMEDRIVER), f"chromedriver ({CHROMEDRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="azora-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP_WIDTH},900")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shoot(driver: Any, name: str, *, phone: bool = True) -> list[Path]:
    """Whole-page PNGs of what the browser shows, at desktop width and (unless `phone=False`)
    at phone width, as `<name>-desktop.png` / `<name>-phone.png`. Returns their paths."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    widths = [("desktop", DESKTOP_WIDTH, False)]
    if phone:
        widths.append(("phone", PHONE_WIDTH, True))
    saved: list[Path] = []
    for label, width, mobile in widths:
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        metrics["height"] = max(600, min(height, 6000))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        path = SCREENSHOTS / f"{name}-{label}.png"
        driver.save_screenshot(str(path))
        saved.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return saved


# ---------------------------------------------------------------- server and worker processes


@dataclass
class Stack:
    """A running service: one server, one worker, their emulator and SMTP server."""

    url: str
    settings: Settings
    emulator_url: str
    smtp: SmtpServer
    server: ServiceProcess
    worker: ServiceProcess | None
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        worker = self.worker.output(4000) if self.worker is not None else "(none)"
        return f"--- server\n{self.server.output(4000)}\n--- worker\n{worker}"


@contextlib.contextmanager
def running_stack(
    database_url: str, tmp_path: Path, *, worker: bool = True, **env: str
) -> Iterator[Stack]:
    """serve + worker on `database_url` (migrated), an emulator of their own whose webhooks go
    to the server, and an SMTP server; `env` adds settings (CONSOLE_ENABLED=true, …).
    `worker=False` leaves the worker out (a test that wants jobs to wait)."""
    smtp = SmtpServer()
    smtp.start()
    emulator = EmulatorProcess(webhook_delay=0.2)
    emulator.start()
    settings = emulator_settings(
        database_url,
        tmp_path,
        emulator.base_url,
        smtp_url=smtp.url,
        merchant_name="Azora Test Shop",
        receipt_from_email="receipts@shop.example",
    )
    # server_env carries the core settings only: the mail ones are passed here.
    env = {
        "SMTP_URL": smtp.url,
        "MERCHANT_NAME": settings.merchant_name,
        "RECEIPT_FROM_EMAIL": settings.receipt_from_email,
        **env,
    }
    run_id = uuid.uuid4().hex[:6]
    server: ServiceProcess | None = None
    process: ServiceProcess | None = None
    try:
        server = start_server(server_env(settings, **env), tmp_path / f"serve-{run_id}.log")
        configure_webhook(
            emulator.base_url, url=f"{server.url}/api/webhooks/stripe", secret=WEBHOOK_SECRET
        )
        if worker:
            worker_env = server_env(settings, LOG_LEVEL="INFO", WORKER_POLL_SECONDS="0.1", **env)
            process = start_worker(worker_env, tmp_path / f"worker-{run_id}.log")
        yield Stack(server.url, settings, emulator.base_url, smtp, server, process, env)
    finally:
        if process is not None:
            process.stop()
        if server is not None:
            server.stop()
        emulator.stop()
        smtp.stop()


@pytest.fixture
def browser_database_url(sqlite_database_url: str) -> str:
    """The browser suites run on SQLite (the rules themselves run on both engines in the fast
    suites); a module may override this fixture with `database_url` for both."""
    return sqlite_database_url


@pytest.fixture
def start_stack(browser_database_url: str, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start a stack with extra settings; every one started is stopped after the test."""
    stacks: list[contextlib.ExitStack] = []

    def start(**env: str) -> Stack:
        exit_stack = contextlib.ExitStack()
        stacks.append(exit_stack)
        return exit_stack.enter_context(running_stack(browser_database_url, tmp_path, **env))

    yield start
    for exit_stack in reversed(stacks):
        exit_stack.close()


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack()


@pytest.fixture
def checkout_stack(start_stack: Callable[..., Stack]) -> Stack:
    """A stack serving the checkout page."""
    return start_stack(**CHECKOUT_ENV)


def wait_until(predicate: Callable[[], bool], *, timeout: float = 45.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.1)


__all__ = [
    "PHONE_WIDTH",
    "Stack",
    "require_package",
    "running_stack",
    "shoot",
    "wait_until",
]
