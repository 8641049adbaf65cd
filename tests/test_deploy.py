"""deploy/: the alert rules pass `promtool test rules`, the systemd units pass
`systemd-analyze verify`, and the rules and the dashboard name only metrics the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from azora_payments import metrics
from tests.private_services import require_package

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def exported_names() -> set[str]:
    """Every series name the service's metrics are exported under."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, kind = value._name, value._type
        if kind == "counter":
            names.add(f"{name}_total")
        elif kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(name)
    return names


def test_the_alert_rules_pass_their_promtool_tests() -> None:
    promtool = require_package(shutil.which("promtool"), "prometheus")
    checked = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_names()
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "azora-payments.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set(re.findall(r"\bazora_[a-z0-9_]+", rules + "\n".join(exprs)))
    assert used, "no metric found"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # Every alert has its runbook section in docs/deploy.md.
    guide = (DEPLOY.parent / "docs" / "deploy.md").read_text().lower()
    for alert in re.findall(r"alert: (\w+)", rules):
        assert f"### {alert.lower()}" in guide, f"no runbook for {alert}"


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units were not verified")
    cli = Path(sys.executable).with_name("azora-payments")
    assert cli.exists()
    units = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        # The units name the install path of docs/deploy.md; verify them against this one.
        text = unit.read_text().replace("/opt/azora-payments/venv/bin/azora-payments", str(cli))
        copy = tmp_path / unit.name
        copy.write_text(text)
        units.append(str(copy))
    assert len(units) == 2
    result = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, check=False, timeout=120
    )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "azora" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == [], complaints
