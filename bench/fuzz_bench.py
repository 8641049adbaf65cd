"""The schemathesis run of tests/test_schemathesis.py with a larger budget: examples per
operation (`--examples`, default 200), as a customer and as an operator, against a real server
and the Stripe emulator. Prints the cases generated and passed per role and the wall time; any
5xx or error that is not problem+json fails the run, with schemathesis's reproduction.

    .venv/bin/python bench/fuzz_bench.py [--examples 200] [--seed 20261201]

Several minutes; figures taken on a loaded machine are not worth comparing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    env = {
        **os.environ,
        "AZORA_FUZZ_EXAMPLES": str(args.examples),
        "AZORA_FUZZ_SEED": str(args.seed),
    }
    started = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_schemathesis.py",
            "-q",
            "-s",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    print(f"schemathesis: {args.examples} examples per operation, seed {args.seed}")
    for role, cases in re.findall(r"schemathesis as (\w+): (.*)", run.stdout):
        print(f"  {role:9} {cases}")
    print(f"  wall time {elapsed:.0f} s (server, emulator and schemathesis on this machine)")
    if run.returncode != 0:
        print(run.stdout[-20000:], run.stderr[-4000:], sep="\n")
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
