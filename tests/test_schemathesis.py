"""Schemathesis over `/openapi.json` against a real `azora-payments serve` process (wired to the
Stripe emulator), authenticated as a customer and as an operator: whatever it generates, the
service never answers 5xx, every error is an RFC 9457 problem+json (tests/fuzz_checks.py), and
every answer has a media type, a body and the required headers that the schema documents for its
operation and status (schemathesis's response_schema_conformance, content_type_conformance and
response_headers_conformance).

Small and reproducible for CI: a fixed seed and AZORA_FUZZ_EXAMPLES examples per operation (10
by default; about a minute on a quiet machine). `bench/fuzz_bench.py` runs it with a larger
budget and prints the figures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings, make_token
from tests.test_payments_processes import servers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = os.environ.get("AZORA_FUZZ_EXAMPLES", "10")
SEED = os.environ.get("AZORA_FUZZ_SEED", "20261201")
TOKENS = {
    "customer": make_token("fuzz_customer", email="fuzz@shop.example", lifetime=6 * 3600),
    "operator": make_token("fuzz_ops", roles=["admin"], lifetime=6 * 3600),
}


@pytest.fixture(scope="module")
def fuzz_server(
    stripe_emulator: str, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    database = folder / "fuzz.db"
    shutil.copy(sqlite_template, database)
    settings = make_settings(
        f"sqlite:///{database}",
        receipt_storage=str(folder / "receipts"),
        stripe_api_base=stripe_emulator,
        stripe_max_network_retries=1,
    )
    # Limits that would only turn the run into a stream of 429s.
    generous = {"RATE_LIMIT_USER": "100000/minute", "RATE_LIMIT_IP": "100000/minute"}
    with servers(settings, folder, **generous) as [server]:
        yield server.url
        output = server.output()
    assert "Traceback" not in output, output


def schemathesis(base_url: str, token: str, report: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error,problem_json,response_schema_conformance,content_type_conformance,"
        "response_headers_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_checks", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("role", sorted(TOKENS))
def test_no_server_error_and_every_error_is_a_problem(
    fuzz_server: str, role: str, tmp_path: Path
) -> None:
    run = schemathesis(fuzz_server, TOKENS[role], tmp_path / "report")
    summary = re.search(r"Test cases:\n\s+(.*)", run.stdout)
    print(f"schemathesis as {role}: {summary.group(1) if summary else run.stdout[-2000:]}")
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    assert summary is not None
    assert " passed" in summary.group(1)
    assert "failed" not in summary.group(1)
