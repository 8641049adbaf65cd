"""The emulator's patch package: it refuses a localstripe it was not written for, keeps the
surface emulator.py uses, and each gap module points at tests that exist."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from azora_payments.devstack import localstripe_patches
from azora_payments.devstack.localstripe_patches import (
    LOCALSTRIPE_VERSION,
    UnsupportedLocalstripe,
    check_localstripe_version,
)

EMULATOR_TESTS = Path(__file__).with_name("test_emulator.py")


def test_the_installed_localstripe_is_the_one_written_for() -> None:
    check_localstripe_version()
    check_localstripe_version(LOCALSTRIPE_VERSION)


@pytest.mark.parametrize("installed", ["1.15.11", "1.16.0", "2.0", "none"])
def test_another_localstripe_is_refused_by_name(installed: str) -> None:
    with pytest.raises(UnsupportedLocalstripe) as info:
        check_localstripe_version(installed)
    message = str(info.value)
    assert f"localstripe {installed} is installed" in message
    assert f"written for localstripe {LOCALSTRIPE_VERSION}" in message


def test_apply_refuses_before_patching_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from localstripe import resources as R

    monkeypatch.setattr(localstripe_patches, "version", lambda _name: "1.16.0")
    monkeypatch.setattr(localstripe_patches, "_applied", False)
    dump = R.Store.dump_to_disk
    with pytest.raises(UnsupportedLocalstripe, match=r"localstripe 1\.16\.0 is installed"):
        localstripe_patches.apply(webhook_delay=0.0)
    assert R.Store.dump_to_disk is dump
    assert localstripe_patches._applied is False


def test_the_surface_emulator_py_uses_is_kept() -> None:
    for name in ("SETTINGS", "DECLINE_RULES", "REQUEST_CONTEXT"):
        assert hasattr(localstripe_patches, name), name
    for name in ("apply", "register_routes", "shutdown"):
        assert callable(getattr(localstripe_patches, name)), name
    assert localstripe_patches.SETTINGS.search_lag == 0.0


def _gap_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.iter_modules(localstripe_patches.__path__)
        if info.name.startswith("gap_")
    ]


def test_every_gap_module_is_in_the_package_table() -> None:
    names = _gap_modules()
    assert len(names) == 9
    for name in names:
        assert f"``{name}``" in (localstripe_patches.__doc__ or ""), name


@pytest.mark.parametrize("name", _gap_modules())
def test_each_gap_module_names_tests_that_exist_for_its_gaps(name: str) -> None:
    """A gap module's docstring points at the tests that show its gap: they must exist."""
    module = importlib.import_module(f"{localstripe_patches.__name__}.{name}")
    named = re.findall(r"``(?:[\w/.]+::)?(test_\w+)``", module.__doc__ or "")
    assert named, f"{name} names no test"
    defined = set(re.findall(r"^(?:async )?def (test_\w+)", EMULATOR_TESTS.read_text(), re.M))
    missing = [test for test in named if test not in defined]
    assert not missing, f"{name} points at tests that do not exist: {missing}"
