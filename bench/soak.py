"""Soak (a release check): the fault suite's scenarios (tests/faults/scenarios.py), each repeated
for a few minutes on one private stack — PostgreSQL, Redis, the emulator, an SMTP server, two
servers, two workers — under the same load, with every invariant checked after every round.
Prints each round's figures (`FAULTS …`) and a summary per scenario; exits 1 at the first broken
promise.

    .venv/bin/python bench/soak.py [--minutes 3] [--scenarios postgres-down,worker-kills]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.load import Figures  # noqa: E402
from tests.faults.scenarios import SCENARIOS, run_named  # noqa: E402
from tests.faults.stack import Stack  # noqa: E402

from machine import header  # noqa: E402


def summary(name: str, rounds: list[Figures], seconds: float) -> str:
    recoveries = [f.recovery_seconds for f in rounds if f.recovery_seconds is not None]
    total = sum(f.requests for f in rounds)
    return (
        f"SOAK {name}: {len(rounds)} rounds in {seconds:.0f} s, requests={total} "
        f"({total / seconds:.1f}/s) 503={sum(f.answers.get('503', 0) for f in rounds)} "
        f"500={sum(f.answers.get('500', 0) for f in rounds)} "
        f"recovery max={max(recoveries, default=0):.1f} s "
        f"mean={sum(recoveries) / max(1, len(recoveries)):.1f} s "
        f"payments={sum(f.payments for f in rounds)} intents={sum(f.intents for f in rounds)} "
        f"receipts={sum(f.receipts for f in rounds)} emails={sum(f.emails for f in rounds)} "
        f"extra_copies={sum(f.extra_copies for f in rounds)} kills={sum(f.kills for f in rounds)}"
    )


async def soak(stack: Stack, names: list[str], minutes: float) -> int:
    for name in names:
        rounds: list[Figures] = []
        started = time.monotonic()
        while time.monotonic() - started < minutes * 60 or not rounds:
            try:
                rounds.append(await run_named(stack, name, after_seconds=10.0))
            except AssertionError as exc:
                print(f"SOAK {name}: BROKEN in round {len(rounds) + 1}: {exc}", flush=True)
                return 1
        print(summary(name, rounds, time.monotonic() - started), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    names = [name for name in args.scenarios.split(",") if name]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    header("soak: faults under load")
    with tempfile.TemporaryDirectory(prefix="azora-soak-") as root:
        stack = Stack(Path(root))
        try:
            stack.start()
            return asyncio.run(soak(stack, names, args.minutes))
        finally:
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
