"""Journal append throughput with group commit vs a bare sqlite3 batched-insert ceiling.

The ceiling is the issue's fixed reference: bare sqlite3 (WAL, ``synchronous=FULL``)
inserting pre-built 1 KiB rows with ascending ids, ``executemany`` in transactions of
``--appenders`` rows (the size the journal's group commit reaches), measured in the same
run. The journal (format 3: LevelDB, the log's one synced write batch per group commit,
the dedupe index in a database of its own, a lookup of every id) appends 1 KiB
CloudEvents from ``--appenders`` concurrent tasks.

While the appenders run, a probe task in the same event loop sleeps 1 ms at a time and
records how late it wakes up: the event loop's lag (our own appenders' CPU included;
a commit that held the GIL would show here as a stall). On a shared machine that wall
figure is mostly other processes' CPU, so two more are printed that load moves little:
how many appenders resumed between the probe's due time and its wake-up, and the loop
thread's CPU time over that window (its thread CPU clock, from the last appender
resumption at or before the due time, or the probe's own start: an upper bound). The
same probe on an idle loop, in the same run, gives the machine's own floor.

The floors (:func:`floor_run`): the same appenders awaiting pre-encoded rows through a
bare group commit on the same engine, with nothing else the journal does, staged once in
the writer thread and once on the event loop (as the journal stages): how much of the
ceiling an asyncio journal on LevelDB could reach on this machine, and at what loop lag.

For reference, as in issue 15's table, each engine's writes alone run in a thread while
the main thread sleeps 0.2 ms at a time and records how late it wakes: the bare sqlite3
ceiling, and the journal's synced write batches (staged beforehand, as the writer stages
them on the event loop).

The appenders run on uvloop, as the daemon does by default (``runtime.uvloop = true``);
``--no-uvloop`` runs them on the plain asyncio loop.

Run: ``.venv/bin/python -m bench.bench_journal [--events 20000] [--appenders 64] [--runs 3]``
"""

from __future__ import annotations

import argparse
import bisect
import functools
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from argbridge.clock import SYSTEM_CLOCK
from argbridge.events import CloudEvent, deterministic_id
from argbridge.journal import Journal, engine, store
from argbridge.journal.ops import Append, Mirror
from argbridge.journal.records import encoded
from argbridge.journal.writer import Writer
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


def ceiling(path: Path, n: int, batch: int, uuid_ids: bool = False, row_bytes: int = 1024) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, "
        "type TEXT, subject TEXT, size INTEGER, body BLOB, appended_at REAL)"
    )
    body = b"x" * row_bytes
    # The ceiling's ids ascend, so each commit touches the end of the id index only; the
    # journal's ids are UUIDs, whose index inserts land on random pages (more WAL pages
    # per commit). ``uuid_ids`` measures that cost for reference.
    ids = [deterministic_id("ceiling", i) if uuid_ids else f"id-{i}" for i in range(n)]
    rows = [(ids[i], "t", "s", row_bytes, body, 0.0) for i in range(n)]
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


PROBE_SLEEP = 0.001
THREAD_PROBE_SLEEP = 0.0002


def with_lateness_probe(fn: Callable[[], float]) -> tuple[float, list[float]]:
    """Run ``fn`` in a worker thread while this thread sleeps 0.2 ms at a time and records
    how late it wakes (the issue's measure of a commit holding the GIL)."""
    out: list[float] = []
    lags: list[float] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    while worker.is_alive():
        t0 = time.perf_counter()
        time.sleep(THREAD_PROBE_SLEEP)
        lags.append(time.perf_counter() - t0 - THREAD_PROBE_SLEEP)
    worker.join()
    return out[0], lags


def engine_alone(path: Path, events: list[CloudEvent], batch: int) -> Callable[[], float]:
    """The journal's engine as the writer uses it: groups of ``batch`` appends staged
    here (dedupe lookups, keys, the write batch), then a function that writes them, one
    synced write batch per group, for :func:`with_lateness_probe` to run in a thread."""
    db = engine.open_db(path)
    writer = Writer(
        db,
        Mirror(cursors={"bench": 0}),
        clock=SYSTEM_CLOCK,
        max_group_commit=batch,
        on_commit=lambda: None,
    )
    staged = []
    for i in range(0, len(events), batch):
        work = writer._begin()
        writer._stage(work, [Append(*encoded(e)) for e in events[i : i + batch]])
        writer._finish(work)
        writer.mirror = work.mirror
        staged.append(work.txn)

    def write_all() -> float:
        start = time.perf_counter()
        for txn in staged:
            txn.write()
        elapsed = time.perf_counter() - start
        db.close()
        return len(events) / elapsed

    return write_all


async def floor_run(
    path: Path, events: list[CloudEvent], appenders: int, *, stage_on_loop: bool = False
) -> tuple[float, float, float]:
    """The floor of ``appenders`` asyncio tasks appending durably: each awaits its own
    pre-encoded row (the event's JSON, encoded before the clock starts) through a bare
    group commit: a ``get`` of each id (the dedupe lookup), then one synced LevelDB
    write batch of the seq and id keys, then the group's waiters resolved at once. No
    dedupe window, no mirror, no sizes, no backpressure, no retention: what the journal
    does beyond this only costs more. The group is staged (lookups and puts) in the
    writer thread, which takes everything queued; with ``stage_on_loop``, on the event
    loop by one committer task, as the journal does, and only the synced write goes to
    the thread. Returns events/s, the loop thread's CPU seconds per event and the p99
    of the event loop's lag (the journal's probe, wall time only)."""
    import asyncio
    import queue
    from collections import deque

    db = engine.open_db(path)
    loop = asyncio.get_running_loop()
    Job = tuple[bytes, bytes, asyncio.Future[None]]
    jobs: queue.SimpleQueue[Job | Callable[[], None] | None] = queue.SimpleQueue()
    seq = 0

    def resolve(futures: list[asyncio.Future[None]]) -> None:
        for fut in futures:
            fut.set_result(None)

    def stage(group: list[Job]) -> Any:
        nonlocal seq
        wb = db.write_batch(sync=True)
        for key, value, _ in group:
            if db.get(key) is None:
                seq += 1
                wb.put(store.seq_key(seq), value)
                wb.put(key, store.pack_u64(seq))
        return wb

    def write_groups() -> None:
        while (job := jobs.get()) is not None:
            if callable(job):  # stage_on_loop: a staged batch's write
                job()
                continue
            group = [job]
            while len(group) < appenders:
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    jobs.put(None)
                    break
                assert not callable(more)
                group.append(more)
            stage(group).write()
            loop.call_soon_threadsafe(resolve, [g[2] for g in group])

    rows = [(store.id_key(e.id), e.to_json()) for e in events]
    thread = threading.Thread(target=write_groups, name="floor-writer")
    thread.start()
    per = len(rows) // appenders
    pending: deque[Job] = deque()
    queued = asyncio.Event()

    async def committer() -> None:
        while True:
            await queued.wait()
            queued.clear()
            while pending:
                group = [pending.popleft() for _ in range(min(appenders, len(pending)))]
                wb = stage(group)
                written = loop.create_future()

                def write(wb: Any = wb, written: asyncio.Future[None] = written) -> None:
                    wb.write()
                    loop.call_soon_threadsafe(written.set_result, None)

                jobs.put(write)
                await written
                resolve([g[2] for g in group])

    async def appender(k: int) -> None:
        for key, value in rows[k * per : (k + 1) * per]:
            fut = loop.create_future()
            if stage_on_loop:
                pending.append((key, value, fut))
                queued.set()
            else:
                jobs.put((key, value, fut))
            await fut

    lags: list[float] = []
    done = False
    start, loop0 = time.perf_counter(), time.thread_time()
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(lag_probe, lags, lambda: not done)
            if stage_on_loop:
                outer.start_soon(committer)
            async with anyio.create_task_group() as tg:
                for k in range(appenders):
                    tg.start_soon(appender, k)
            elapsed, loop_cpu = time.perf_counter() - start, time.thread_time() - loop0
            done = True
            outer.cancel_scope.cancel()
        return per * appenders / elapsed, loop_cpu / (per * appenders), percentile(lags, 99)
    finally:
        jobs.put(None)
        thread.join()
        db.close()


@dataclass
class LoopLag:
    """What the lag probe saw: per wake-up, the wall lag, the appenders resumed between
    the due time and the wake-up, and the loop thread's CPU time over that window; and
    the CPU seconds of the loop thread and of the whole process (LevelDB's writer and
    compaction threads too) over the appends."""

    wall: list[float] = field(default_factory=list)
    ahead: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    loop_cpu: float = 0.0
    process_cpu: float = 0.0


def loop_lag(
    probes: list[tuple[float, float, float, float]], resumed: list[tuple[float, float]]
) -> LoopLag:
    """From the probe's ``(start, start cpu, wake, wake cpu)`` and the appenders'
    ``(wall, thread cpu)`` at each resumption (in time order)."""
    out = LoopLag()
    walls = [w for w, _ in resumed]
    for t0, c0, wake, wake_cpu in probes:
        due = t0 + PROBE_SLEEP
        out.wall.append(wake - due)
        i, j = bisect.bisect_right(walls, due), bisect.bisect_right(walls, wake)
        out.ahead.append(j - i)
        anchor = resumed[i - 1][1] if i and walls[i - 1] > t0 else c0
        out.cpu.append(wake_cpu - anchor)
    return out


async def lag_probe(lags: list[float], running: Callable[[], bool]) -> None:
    """Sleep ``PROBE_SLEEP`` at a time while ``running()``, adding each wake-up's
    lateness to ``lags``."""
    while running():
        t0 = time.perf_counter()
        await anyio.sleep(PROBE_SLEEP)
        lags.append(time.perf_counter() - t0 - PROBE_SLEEP)


async def idle_probe(seconds: float = 1.0) -> list[float]:
    """The lag probe on a loop with nothing else to do: the machine's floor."""
    lags: list[float] = []
    end = time.perf_counter() + seconds
    await lag_probe(lags, lambda: time.perf_counter() < end)
    return lags


async def journal_run(
    path: Path, events: list[CloudEvent], appenders: int
) -> tuple[float, list[float], int, int, LoopLag]:
    latencies: list[float] = []
    probes: list[tuple[float, float, float, float]] = []
    resumed: list[tuple[float, float]] = []
    clock, cpu_clock = time.perf_counter, time.thread_time
    async with Journal(path, sinks=["bench"], max_backlog_events=10**9) as journal:
        per = len(events) // appenders
        done = False

        async def probe() -> None:
            while not done:
                t0, c0 = clock(), cpu_clock()
                await anyio.sleep(PROBE_SLEEP)
                probes.append((t0, c0, clock(), cpu_clock()))

        append = journal.for_source().append  # what a source gets

        async def appender(k: int) -> None:
            for ev in events[k * per : (k + 1) * per]:
                t0 = clock()
                await append(ev)
                t1 = clock()
                resumed.append((t1, cpu_clock()))
                latencies.append(t1 - t0)

        async with anyio.create_task_group() as outer:
            outer.start_soon(probe)
            start, loop0, proc0 = time.perf_counter(), cpu_clock(), time.process_time()
            async with anyio.create_task_group() as tg:
                for k in range(appenders):
                    tg.start_soon(appender, k)
            elapsed = time.perf_counter() - start
            loop_cpu, proc_cpu = cpu_clock() - loop0, time.process_time() - proc0
            done = True
        stats = journal.stats()
    lag = loop_lag(probes, resumed)
    lag.loop_cpu, lag.process_cpu = loop_cpu, proc_cpu
    return per * appenders / elapsed, latencies, stats.commits, stats.syncs, lag


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
    parser.add_argument(
        "--dir",
        help="where the databases go (default: the system's temporary directory); "
        "/dev/shm takes the disk out and leaves CPU and GIL costs",
    )
    parser.add_argument(
        "--journal-only",
        action="store_true",
        help="only the journal appends, printing its group commits (to count the process's "
        "fdatasync calls with: strace -f -c -e trace=fsync,fdatasync)",
    )
    args = parser.parse_args()
    loop = "uvloop" if args.uvloop else "asyncio"
    if args.journal_only:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rate, _, commits, syncs, _ = anyio.run(
                journal_run,
                Path(tmp) / "j",
                make_events(args.events, "only"),
                args.appenders,
                backend="asyncio",
                backend_options={"use_uvloop": args.uvloop},
            )
        print(f"journal only: {rate:,.0f} events/s, {commits} group commits, {syncs} synced")
        return
    header(f"journal append (LevelDB, synced batch per group) vs bare sqlite3 (1 KiB, {loop})")
    print(f"   {as_the_daemon()}")
    ceilings: list[float] = []
    ceilings_1000: list[float] = []
    ceilings_uuid: list[float] = []
    results: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    commits_seen: list[int] = []
    syncs_seen: list[int] = []
    lag50: list[float] = []
    lag99: list[float] = []
    lagmax: list[float] = []
    ahead99: list[float] = []
    aheadmax: list[float] = []
    cpu50: list[float] = []
    cpu99: list[float] = []
    cpumax: list[float] = []
    idle: list[float] = []
    loop_us: list[float] = []
    proc_us: list[float] = []
    ratios: list[float] = []
    # Per floor (staged in the writer thread, staged on the loop): events/s, loop µs
    # per event, loop lag p99 in ms, one tuple per run.
    floors: dict[str, list[tuple[float, float, float]]] = {"thread": [], "loop": []}
    threaded: dict[str, list[tuple[float, list[float]]]] = {"sqlite": [], "journal": []}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            ceilings.append(ceiling(Path(tmp) / "c.db", args.events, args.appenders))
            ceilings_1000.append(ceiling(Path(tmp) / "c1000.db", args.events, 1000))
            ceilings_uuid.append(ceiling(Path(tmp) / "cu.db", args.events, args.appenders, True))
            events = make_events(args.events, f"r{run}")
            idle += anyio.run(
                idle_probe, backend="asyncio", backend_options={"use_uvloop": args.uvloop}
            )
            rate, lat, commits, syncs, lags = anyio.run(
                journal_run,
                Path(tmp) / "j.db",
                events,
                args.appenders,
                backend="asyncio",
                backend_options={"use_uvloop": args.uvloop},
            )
            results.append(rate)
            ratios.append(rate / ceilings[-1])
            for where in ("thread", "loop"):
                rate_, cpu_, lag_ = anyio.run(
                    functools.partial(floor_run, stage_on_loop=where == "loop"),
                    Path(tmp) / f"floor-{where}",
                    make_events(args.events, f"f{where}{run}"),
                    args.appenders,
                    backend="asyncio",
                    backend_options={"use_uvloop": args.uvloop},
                )
                floors[where].append((rate_, cpu_ * 1e6, lag_ * 1000))
            threaded["sqlite"].append(
                with_lateness_probe(
                    lambda: ceiling(Path(tmp) / "ct.db", args.events, args.appenders)
                )
            )
            fresh = make_events(args.events, f"t{run}")
            threaded["journal"].append(
                with_lateness_probe(engine_alone(Path(tmp) / "jt", fresh, args.appenders))
            )
            p50s.append(percentile(lat, 50) * 1000)
            p99s.append(percentile(lat, 99) * 1000)
            commits_seen.append(commits)
            syncs_seen.append(syncs)
            lag50.append(percentile(lags.wall, 50) * 1000)
            lag99.append(percentile(lags.wall, 99) * 1000)
            lagmax.append(max(lags.wall) * 1000)
            loop_us.append(lags.loop_cpu / len(lat) * 1e6)
            proc_us.append(lags.process_cpu / len(lat) * 1e6)
            ahead99.append(percentile(lags.ahead, 99))
            aheadmax.append(max(lags.ahead))
            cpu50.append(percentile(lags.cpu, 50) * 1000)
            cpu99.append(percentile(lags.cpu, 99) * 1000)
            cpumax.append(max(lags.cpu) * 1000)
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
    row(
        "journal / ceiling (ratio of the medians)",
        f"{100 * j / c:.0f} %",
        f"per run {', '.join(f'{100 * x:.0f}' for x in ratios)} %; target >= 60 %",
    )
    row("journal / ceiling (median of the per-run ratios)", f"{100 * median(ratios):.0f} %")
    for where, label in (("thread", "staged in its writer thread"), ("loop", "staged on the loop")):
        runs_ = floors[where]
        fl = median([r for r, _, _ in runs_])
        row(
            f"floor: {args.appenders} asyncio appenders, bare group commit {label}",
            f"{fl:,.0f} events/s",
            f"{100 * fl / c:.0f} % of the ceiling; journal = {100 * j / fl:.0f} % of it; "
            f"loop {median([u for _, u, _ in runs_]):.1f} µs/event; loop lag p99 "
            f"{median([g for _, _, g in runs_]):.2f} ms; runs "
            f"{', '.join(f'{r:,.0f}' for r, _, _ in runs_)}",
        )
    row("append latency p50 / p99", f"{median(p50s):.2f} / {median(p99s):.2f} ms")
    row(
        "CPU per event: loop thread / whole process",
        f"{median(loop_us):.1f} / {median(proc_us):.1f} µs",
        "the rest: LevelDB's writer and compaction threads",
    )
    row("events per commit (median)", f"{args.events / median(commits_seen):.1f}")
    row(
        "synced write batches per group commit",
        f"{sum(syncs_seen) / sum(commits_seen):.2f}",
        "one fdatasync of LevelDB's log each",
    )
    row(
        "event-loop lag while appending p50 / p99 / max",
        f"{median(lag50):.2f} / {median(lag99):.2f} / {median(lagmax):.1f} ms",
        f"p99 runs {', '.join(f'{x:.2f}' for x in lag99)}; target p99 < 1 ms",
    )
    row(
        "  the same probe on an idle loop (the machine's floor)",
        f"{percentile(idle, 50) * 1000:.2f} / {percentile(idle, 99) * 1000:.2f} / "
        f"{max(idle) * 1000:.1f} ms",
        "p50 / p99 / max, this run, between the journal runs",
    )
    row(
        "  loop-thread CPU from the probe's due time to its wake",
        f"{median(cpu50):.2f} / {median(cpu99):.2f} / {median(cpumax):.1f} ms",
        f"p50 / p99 / max; p99 runs {', '.join(f'{x:.2f}' for x in cpu99)} (an upper bound)",
    )
    row(
        "  appenders resumed ahead of the probe, p99 / max",
        f"{median(ahead99):.0f} / {median(aheadmax):.0f}",
        f"of {args.appenders}",
    )
    for name, label in (
        ("sqlite", "bare sqlite3 ceiling"),
        ("journal", "journal's synced batches"),
    ):
        runs = threaded[name]
        lat = [x for _, lags in runs for x in lags]
        row(
            f"{label} in a thread, {args.appenders}/commit; main thread's",
            f"{median([r for r, _ in runs]):,.0f} rows/s",
            f"wake-up lateness p50/p99/max {percentile(lat, 50) * 1000:.2f} / "
            f"{percentile(lat, 99) * 1000:.2f} / {max(lat) * 1000:.1f} ms",
        )
    row("peak RSS", f"{peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
