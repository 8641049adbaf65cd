"""Gap a: localstripe pickles its whole store to /tmp/localstripe.pickle on every write.

Shown by ``tests/devstack/test_emulator.py::test_a_store_is_never_pickled_to_tmp``.
"""

from __future__ import annotations

from typing import Any

from localstripe import resources as R


def _store_no_dump(self: Any) -> None:
    """The pickle in /tmp is slow and shared by every localstripe on the machine."""


def _store_no_load(self: Any) -> None:
    """Each emulator starts empty, whatever an earlier run left in /tmp."""


def install() -> None:
    R.Store.dump_to_disk = _store_no_dump
    R.Store.try_load_from_disk = _store_no_load
