"""The fault suite: one stack for the module; its tests are marked `faults` (run by itself:
`scripts/test` runs it after the other suites, never beside them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = Stack(tmp_path_factory.mktemp("faults"))
    try:
        started.start()
        yield started
    finally:
        started.stop()
