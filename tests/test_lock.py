"""The lock files (scripts/lock): `--check`, the CI step, fails when pyproject.toml changed
without them, and when a lock was edited by hand; the locks pin every package with hashes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what `scripts/lock --check` reads."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lock", tmp_path / "scripts" / "lock")
    for name in ("pyproject.toml", "requirements.lock", "requirements-dev.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(project / "scripts" / "lock"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_locks_match_pyproject(project: Path) -> None:
    result = check(project)
    assert result.returncode == 0, result.stderr


def test_a_new_dependency_makes_the_locks_out_of_date(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"fpdf2==2.8.9",', '"fpdf2==2.8.9",\n    "six==1.17.0",'))
    result = check(project)
    assert result.returncode == 1
    assert "six==1.17.0 is not what it locks" in result.stderr
    assert "run scripts/lock" in result.stderr


def test_a_changed_pin_makes_the_locks_out_of_date(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"httpx==0.28.1"', '"httpx==0.28.0"'))
    result = check(project)
    assert result.returncode == 1
    assert "not made from this pyproject.toml" in result.stderr


def test_a_hand_edited_lock_is_caught(project: Path) -> None:
    runtime = project / "requirements.lock"
    runtime.write_text(re.sub(r"^idna==[^ ]+", "idna==0.1", runtime.read_text(), flags=re.M))
    result = check(project)
    assert result.returncode == 1
    assert "idna==0.1 is not what requirements-dev.lock locks" in result.stderr


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_has_hashes(name: str) -> None:
    text = (ROOT / name).read_text()
    pins = re.findall(
        r"^([a-z0-9][a-z0-9._-]*(?:\[[a-z0-9,_-]+\])?)==(\S+) \\\n"
        r"(    --hash=sha256:[0-9a-f]{64}.*\n)+",
        text,
        re.M,
    )
    requirement_lines = re.findall(r"^[a-z0-9]", text, re.M)
    assert len(pins) == len(requirement_lines) > 20


def audit(tmp_path: Path, *, prints: str, exits: int) -> subprocess.CompletedProcess[str]:
    """scripts/audit with pip-audit replaced by a script that prints `prints` and exits."""
    fake = tmp_path / "pip-audit"
    fake.write_text(f"#!/bin/sh\ncat <<'OUT'\n{prints}\nOUT\nexit {exits}\n")
    fake.chmod(0o755)
    return subprocess.run(
        [str(ROOT / "scripts" / "audit")],
        env={"PIP_AUDIT": str(fake), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_audit_says_skipped_when_the_database_is_unreachable(tmp_path: Path) -> None:
    result = audit(
        tmp_path,
        prints="requests.exceptions.ConnectionError: Max retries exceeded with url: /v1/query",
        exits=1,
    )
    assert result.returncode == 0
    assert "SKIPPED, not passed" in result.stdout


def test_audit_fails_on_a_finding(tmp_path: Path) -> None:
    result = audit(tmp_path, prints="Found 1 known vulnerability in 1 package", exits=1)
    assert result.returncode == 1
    assert "Found 1 known vulnerability" in result.stdout
    assert "SKIPPED" not in result.stdout


def test_audit_passes_only_when_pip_audit_does(tmp_path: Path) -> None:
    result = audit(tmp_path, prints="No known vulnerabilities found", exits=0)
    assert result.returncode == 0
    assert "No known vulnerabilities found" in result.stdout
