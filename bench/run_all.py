"""Run every benchmark in turn (``make bench``), each printing its figures beside the
ceiling it measured in the same run. Arguments after ``--`` go to every script.

Run: ``.venv/bin/python bench/run_all.py [--only journal,sinks]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ["journal", "arga", "generic", "webhooks", "sinks", "ops", "bounds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else BENCHES
    failed = []
    for name in chosen:
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        print(f"\n######## bench_{name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.bench_{name}"], cwd=ROOT)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
