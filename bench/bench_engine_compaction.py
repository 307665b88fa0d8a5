"""LevelDB's compaction CPU per appended event as the journal grows (issue 17 item 6).

The 30-minute soak's daemon used more CPU the longer it ran (0.21 core in its first ten
minutes, 0.27-0.31 in its last); sampled per thread, the growth is in a thread that is
not Python's: LevelDB's background compaction thread. This benchmark isolates it: one
process writes the journal's keys with the journal's options (``journal/engine.py``:
``open_leveldb``) in groups of ``--group`` (an event under its ascending seq key, ~1 KiB; its
id under a random UUID key, 16 bytes, as ``Append`` stages them), unsynced (the sync
costs the writer, not the compaction), and every ``--slice`` events prints the CPU the
process's other threads used per event meanwhile (LevelDB's compaction; the writing
thread is this one) and the MiB LevelDB's compactions wrote.

The layouts, one after the other, the same events and ids:

* ``one``: one database holding both key ranges (format 2's, events and ids alone).
  Every memtable flush holds both, so every level-0 table spans from the first event
  key to the last id key, and the ids' random keys overlap nearly every table of the
  next level.
* ``split``: events in one database and ids in another (the ascending event keys apart
  from the random id keys), both with the log's options.
* ``one-raw``: ``one`` with ``journal.compression = "none"`` (no snappy), for
  the share of LevelDB's block compression.
* ``v2``: format 2 as the soak wrote it: ``one`` plus what every group of the soak
  rewrites (``m:last_seq``, ``m:group``, a cursor per sink for three sinks, a stream's
  state), the cursors under format 2's ``c``, which sorts before the events.
* ``engine``: format 3, the journal's engine (``journal/engine.py``) itself: the log
  and the index, the same keys as ``v2`` under format 3's prefixes.

Run: ``.venv/bin/python -m bench.bench_engine_compaction [--events 720000] [--slice 60000]``
(720,000 events: the soak's 30 minutes at 400 events/s).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from argbridge.events import CloudEvent
from argbridge.journal import engine, store
from argbridge.journal.records import encoded

HZ = os.sysconf("SC_CLK_TCK")


def other_threads_cpu() -> float:
    """CPU seconds of this process's threads other than the calling one."""
    me = threading.get_native_id()
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / HZ


def compaction_mib(dbs: list[Any]) -> float:
    """MiB written by the databases' compactions so far (their ``leveldb.stats``)."""
    total = 0.0
    for db in dbs:
        stats = (db.get_property(b"leveldb.stats") or b"").decode()
        for line in stats.splitlines():
            cols = re.split(r"\s+", line.strip())
            if len(cols) == 6 and cols[0].isdigit():
                total += float(cols[5])
    return total


def event_value() -> bytes:
    """A stored event of ~1 KiB as the journal keeps it (an Arga step result's shape:
    ids, names, a log excerpt), so LevelDB's block compression sees what it would."""
    data = {
        "run_id": str(uuid.uuid4()),
        "step": {"id": str(uuid.uuid4()), "name": "checkout › pay with a saved card"},
        "status": "failed",
        "log": " ".join(f"line {n}: {uuid.uuid4().hex[:12]} ok" for n in range(22)),
    }
    event = CloudEvent(
        id=str(uuid.uuid4()),
        source="urn:arga:runs",
        type="arga.validation.step_result",
        subject=f"runs/{data['run_id']}",
        data=data,
    )
    _, body, split = encoded(event)
    return store.pack_joined(0.0, body, split)


#: What every group of the soak rewrites besides its events and ids: ``m:last_seq``,
#: ``m:group``, a cursor per sink (three sinks acking) and a stream's state.
SINKS = ("kafka", "slack", "webhooks")


def group_keys(layout: str) -> list[bytes]:
    meta, state = [store.K_LAST_SEQ, store.K_GROUP], store.state_key("arga:run")
    if layout == "v2":  # format 2: cursors under "c", before the events
        return [*meta, *(b"c" + s.encode() for s in SINKS), state]
    if layout == "engine":
        return [*meta, *(store.cursor_key(s) for s in SINKS), state]
    return []


def open_layout(layout: str, root: Path) -> tuple[list[Any], Callable[[], list[Any]]]:
    """The layout's LevelDB databases, and a maker of one group's write batches (the
    events' batch, the ids' batch: the same object when they share a database)."""

    def leveldb(path: Path, compression: store.Compression = "snappy") -> Any:
        return engine.open_leveldb(
            path,
            create=True,
            compression=compression,
            write_buffer=store.WRITE_BUFFER_SIZE,
            cache=store.BLOCK_CACHE_SIZE,
        )

    if layout == "engine":
        eng = engine.open_db(root / "journal")

        def engine_batch() -> list[Any]:
            wb = eng.write_batch()
            return [wb, wb]

        return list(eng.dbs), engine_batch
    if layout == "split":
        ev_db, id_db = leveldb(root / "events"), leveldb(root / "ids")
        return [ev_db, id_db], lambda: [ev_db.write_batch(), id_db.write_batch()]
    db = leveldb(root / "journal", "none" if layout == "one-raw" else "snappy")

    def one_batch() -> list[Any]:
        wb = db.write_batch()
        return [wb, wb]

    return [db], one_batch


def run(layout: str, events: int, group: int, slice_: int, value: bytes) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-compaction-{layout}-"))
    lines = []
    try:
        dbs, batches = open_layout(layout, root)
        extra = group_keys(layout)
        cpu0, t0, mib0 = other_threads_cpu(), time.perf_counter(), compaction_mib(dbs)
        seq = 0
        while seq < events:
            ev_wb, id_wb = batches()
            for _ in range(group):
                seq += 1
                ev_wb.put(store.seq_key(seq), value)
                id_wb.put(store.id_key(str(uuid.uuid4())), store.pack_index(seq, 0.0))
            for key in extra:
                ev_wb.put(key, store.pack_u64(seq))
            ev_wb.write()
            if id_wb is not ev_wb:
                id_wb.write()
            if seq % slice_ < group:
                cpu1, t1, mib1 = other_threads_cpu(), time.perf_counter(), compaction_mib(dbs)
                line = (
                    f"  {layout:7s} {seq:8,} events: compaction "
                    f"{1e6 * (cpu1 - cpu0) / slice_:5.1f} µs CPU/event, "
                    f"{mib1 - mib0:6.0f} MiB compacted "
                    f"({(mib1 - mib0) * 1024 * 1024 / (slice_ * len(value)):.1f}x the "
                    f"events' bytes), {slice_ / (t1 - t0):7,.0f} events/s written"
                )
                print(line, flush=True)
                lines.append(line)
                cpu0, t0, mib0 = cpu1, t1, mib1
        for db in dbs:
            db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=720_000)
    parser.add_argument("--slice", type=int, default=60_000)
    parser.add_argument("--group", type=int, default=16, help="events per write batch")
    parser.add_argument("--layouts", default="v2,engine")
    args = parser.parse_args()
    value = event_value()
    print("== LevelDB compaction CPU per event as the journal grows (the journal's options)")
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load {os.getloadavg()[0]:.2f}")
    for layout in args.layouts.split(","):
        run(layout, args.events, args.group, args.slice, value)


if __name__ == "__main__":
    main()
