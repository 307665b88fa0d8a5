"""The journal engine's memory as its retained size grows (issue 17 item 5).

An in-process :class:`~argbridge.journal.Journal` with one sink following and acking
(``retain_delivered`` keeps everything, as in the 30-minute soak): ``--events`` appends of
~1 KiB with random ids in groups of ``--batch``; every 10,000 events the process's RSS by
kind (``tests/support/procmem``: LevelDB's mapped ``*.ldb`` tables, the thread arenas
its heap is in) and the number of table files. ``--max-open-files`` and
``--max-file-size`` try LevelDB's options (``journal/store.py``).

Run: ``.venv/bin/python -m bench.bench_engine_mem [--events 700000] [--max-open-files 74]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from tests.support.procmem import smaps

from argbridge.events import CloudEvent
from argbridge.journal import Journal, store


async def main(args: argparse.Namespace) -> None:
    if args.max_open_files:
        store.MAX_OPEN_FILES = args.max_open_files
    if args.max_file_size:
        store.MAX_FILE_SIZE = args.max_file_size
    root = Path(tempfile.mkdtemp(prefix="bench-engine-mem-"))
    path = root / "journal"
    pad = "x" * 700
    started = time.monotonic()
    late_tables: list[float] = []
    peak = 0.0
    try:
        async with Journal(
            path, sinks=["k"], max_backlog_events=10**7, max_backlog_bytes=1 << 40
        ) as journal:
            n = 0
            while n < args.events:
                await journal.append_many(
                    [
                        CloudEvent(
                            id=str(uuid.uuid4()),
                            source="urn:bench",
                            type="argus.incident.created",
                            subject=f"inc-{n + i}",
                            data={"n": n + i, "pad": pad},
                        )
                        for i in range(args.batch)
                    ]
                )
                n += args.batch
                records = await journal.read("k", args.batch)
                if records:
                    await journal.ack("k", records[-1].seq)
                if n % 10_000:
                    continue
                kinds = smaps(os.getpid())
                tables = kinds.get("leveldb-tables", 0.0)
                peak = max(peak, tables)
                if n > args.events // 3:
                    late_tables.append(tables)
                if n % args.every == 0:
                    print(
                        f"{n:>8} events {time.monotonic() - started:6.1f} s: "
                        f"{len(list(path.glob('*.ldb'))):4d} tables, thread arenas "
                        f"{kinds.get('thread-arenas', 0.0):5.1f} MiB, mapped tables "
                        f"{tables:5.1f} MiB, heap {kinds.get('heap', 0.0):5.1f} MiB",
                        flush=True,
                    )
        mean = sum(late_tables) / max(1, len(late_tables))
        print(
            f"mapped tables over the last two thirds: mean {mean:.1f} MiB, "
            f"max {max(late_tables, default=0.0):.1f} MiB; peak {peak:.1f} MiB"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=700_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--every", type=int, default=100_000, help="print every N events")
    parser.add_argument("--max-open-files", type=int, default=0)
    parser.add_argument("--max-file-size", type=int, default=0)
    anyio.run(main, parser.parse_args())
