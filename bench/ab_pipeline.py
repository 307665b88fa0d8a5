"""A/B of the pipelined group commit (this branch) against its variants, same run.

Run: ``APP=64 .venv/bin/python -m bench.ab_pipeline full|nochain|nosplit|nochain_nosplit``
(``full``: as built; ``nochain``: groups split but never staged on a group in flight;
``nosplit``: staged on a group in flight when one is, never split). For the serial
cycle, run ``bench.bench_journal`` (or this script with any name) on main.
"""

import os
import sys
import tempfile
from pathlib import Path

import anyio

from argbridge.journal import writer as W
from bench.bench_journal import journal_run, make_events
from bench.common import as_the_daemon

as_the_daemon()
variant = sys.argv[1] if len(sys.argv) > 1 else "full"
if variant in ("nochain", "nochain_nosplit"):
    W._CHAINABLE = ()  # type: ignore[assignment]
if variant in ("nosplit", "nochain_nosplit"):
    W.SPLIT_AT = 10**9
APP = int(os.environ.get("APP", "64"))
events = make_events(20000, "p")
res = []
for _ in range(2):
    with tempfile.TemporaryDirectory() as tmp:
        r = anyio.run(
            journal_run, Path(tmp) / "j", events, APP, backend_options={"use_uvloop": True}
        )
    rate, _lat, commits, _syncs, lag = r
    res.append((rate, lag.loop_cpu / len(events) * 1e6, len(events) / commits))
print(variant, " ".join(f"{r:8.0f}/s loop {c:5.1f}us per-commit {g:5.1f}" for r, c, g in res))
