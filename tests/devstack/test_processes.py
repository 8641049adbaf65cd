"""The process helper's start-up waits fail with what a reader needs: why (exited, or not ready
in time, with the load average) and the process's last log lines; and never leave the process
running."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from azora_payments.config import Settings
from azora_payments.devstack.processes import StartTimeout, start_server, start_worker
from tests.conftest import make_settings, server_env


@pytest.fixture
def migrated_settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    path = tmp_path / "helper.db"
    shutil.copy(sqlite_template, path)
    return make_settings(f"sqlite:///{path}", receipt_storage=str(tmp_path / "receipts"))


def test_a_server_that_exits_while_starting_fails_at_once_with_its_last_lines(
    migrated_settings: Settings, tmp_path: Path
) -> None:
    env = server_env(migrated_settings, JWT_SECRET="changeme-changeme-changeme-changeme")
    with pytest.raises(StartTimeout) as failed:
        start_server(env, tmp_path / "server.log", timeout=120)
    message = str(failed.value)
    assert "azora-payments serve --port" in message
    assert "exited with 2 before /healthz answered" in message
    # The process's own words, from the end of its log.
    assert "configuration error: JWT_SECRET: looks like a placeholder" in message
    assert str(tmp_path / "server.log") in message


def test_a_worker_not_ready_in_time_fails_with_the_load_and_is_stopped(
    migrated_settings: Settings, tmp_path: Path
) -> None:
    # At WARNING a worker never logs "worker started": the wait can only run out.
    env = server_env(migrated_settings, LOG_LEVEL="WARNING")
    log = tmp_path / "worker.log"
    with pytest.raises(StartTimeout) as failed:
        start_worker(env, log, timeout=3)
    message = str(failed.value)
    assert "azora-payments worker (pid " in message
    assert "logged no '\"worker started\"' within 3 s (load average " in message
    assert f"log {log}, its last 40 lines:" in message
    # Stopped (and reaped) before the error was raised.
    pid = int(re.search(r"\(pid (\d+)\)", message)[1])  # type: ignore[index]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
