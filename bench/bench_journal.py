"""Journal append throughput with group commit vs a bare sqlite3 batched-insert ceiling.

Both sides use the same storage settings (WAL, ``synchronous=FULL``) and 1 KiB events.
The ceiling inserts pre-built rows with ``executemany`` in transactions of the same size
the journal's group commit reaches (``--appenders`` rows), measured in the same run.

The appenders run on uvloop, as the daemon does by default (``runtime.uvloop = true``);
``--no-uvloop`` runs them on the plain asyncio loop.

Run: ``.venv/bin/python -m bench.bench_journal [--events 20000] [--appenders 64] [--runs 3]``
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import anyio

from argbridge.events import CloudEvent, deterministic_id
from argbridge.journal import Journal
from bench.common import as_the_daemon, header, median, peak_rss_mib, percentile, row


def make_events(n: int, tag: str) -> list[CloudEvent]:
    base = CloudEvent(id="x", source="urn:bench", type="arga.validation.step_result", data={})
    pad = 1024 - len(base.to_json()) - 60
    return [
        CloudEvent(
            id=deterministic_id("bench", tag, i),
            source="urn:bench",
            type="arga.validation.step_result",
            subject=f"run-{i % 16}",
            data={"i": i, "pad": "x" * pad},
        )
        for i in range(n)
    ]


def ceiling(path: Path, n: int, batch: int, uuid_ids: bool = False) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, "
        "type TEXT, subject TEXT, size INTEGER, body BLOB, appended_at REAL)"
    )
    body = b"x" * 1024
    # The ceiling's ids ascend, so each commit touches the end of the id index only; the
    # journal's ids are UUIDs, whose index inserts land on random pages (more WAL pages
    # per commit). ``uuid_ids`` measures that cost for reference.
    ids = [deterministic_id("ceiling", i) if uuid_ids else f"id-{i}" for i in range(n)]
    rows = [(ids[i], "t", "s", 1024, body, 0.0) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, batch):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (id, type, subject, size, body, appended_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows[i : i + batch],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


async def journal_run(
    path: Path, events: list[CloudEvent], appenders: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    async with Journal(path, sinks=["bench"], max_backlog_events=10**9) as journal:
        per = len(events) // appenders

        async def appender(k: int) -> None:
            for ev in events[k * per : (k + 1) * per]:
                t0 = time.perf_counter()
                await journal.append(ev)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for k in range(appenders):
                tg.start_soon(appender, k)
        elapsed = time.perf_counter() - start
        commits = journal.stats().commits
    return per * appenders / elapsed, latencies, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--appenders", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the appenders on uvloop, as the daemon does by default (runtime.uvloop)",
    )
    args = parser.parse_args()
    loop = "uvloop" if args.uvloop else "asyncio"
    header(f"journal append: group commit vs bare sqlite3 (WAL, synchronous=FULL, 1 KiB, {loop})")
    print(f"   {as_the_daemon()}")
    ceilings: list[float] = []
    ceilings_1000: list[float] = []
    ceilings_uuid: list[float] = []
    results: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    commits_seen: list[int] = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            ceilings.append(ceiling(Path(tmp) / "c.db", args.events, args.appenders))
            ceilings_1000.append(ceiling(Path(tmp) / "c1000.db", args.events, 1000))
            ceilings_uuid.append(ceiling(Path(tmp) / "cu.db", args.events, args.appenders, True))
            events = make_events(args.events, f"r{run}")
            rate, lat, commits = anyio.run(
                journal_run,
                Path(tmp) / "j.db",
                events,
                args.appenders,
                backend="asyncio",
                backend_options={"use_uvloop": args.uvloop},
            )
            results.append(rate)
            p50s.append(percentile(lat, 50) * 1000)
            p99s.append(percentile(lat, 99) * 1000)
            commits_seen.append(commits)
    c, j = median(ceilings), median(results)
    row(
        f"ceiling: bare sqlite3, {args.appenders} rows/transaction",
        f"{c:,.0f} rows/s",
        f"runs {', '.join(f'{x:,.0f}' for x in ceilings)}",
    )
    row("reference: bare sqlite3, 1000 rows/transaction", f"{median(ceilings_1000):,.0f} rows/s")
    cu = median(ceilings_uuid)
    row(
        f"reference: bare sqlite3, {args.appenders} rows/txn, UUID ids",
        f"{cu:,.0f} rows/s",
        f"journal = {100 * median(results) / cu:.0f} % of it",
    )
    row(
        f"journal.append, {args.appenders} concurrent appenders",
        f"{j:,.0f} events/s",
        f"runs {', '.join(f'{x:,.0f}' for x in results)}",
    )
    row("journal / ceiling", f"{100 * j / c:.0f} %", "target >= 60 %")
    row("append latency p50 / p99", f"{median(p50s):.2f} / {median(p99s):.2f} ms")
    row("events per commit (median)", f"{args.events / median(commits_seen):.1f}")
    row("peak RSS", f"{peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
