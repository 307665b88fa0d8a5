"""Arga sources throughput: events/s from a local SSE server and a local WebSocket server
into the journal (500-byte events, persistence on: one synced LevelDB batch per group), each
beside a bare-client ceiling measured in the same run against the same server.

- server: the Arga simulator (uvicorn + httptools + websockets-sansio) in a separate
  process (so the client side is what is measured), serving pre-published runs of N
  events of ~500 bytes of JSON each; SSE frames are written 128 per chunk.
- SSE ceiling: httpx streaming + a minimal parser (split on blank lines, take the
  ``data:`` line, ``orjson.loads``), no persistence.
- WS ceiling: a bare ``websockets`` client (no compression), ``orjson.loads`` per message.
- argbridge: the ``arga`` source following the run (SSE decoder, normalisation to
  CloudEvents, journal appends with group commit) until the run's terminal event /
  ``done`` is committed.

Usage: ``.venv/bin/python bench/bench_arga.py [--events 50000] [--repeat 3]``
Prints the median [min..max] of each figure and the ratio to its ceiling, and to the
composite ceiling of issue 15: 1 / (1/bare client + 1/bare SQLite ascending write), the
SQLite write (WAL, ``synchronous=FULL``, 500-byte rows, 64 per transaction) measured in
the same run whatever engine the journal uses (target ≥50% of the composite).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
from websockets.asyncio.client import connect

from argbridge.config.settings import load_settings
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.simulator.arga import ArgaSimulator
from argbridge.sources.arga import ArgaSource
from argbridge.sources.base import SourceContext
from bench.bench_journal import ceiling
from bench.common import as_the_daemon, peak_rss_since_reset_mib, reset_peak_rss

TOKEN = "bench-token-0000"
PAD = 430  # → ~500 bytes of JSON per event


def sse_payload(n: int) -> dict[str, Any]:
    return {"type": "progress", "seq": n, "status": "running", "message": "x" * PAD}


def demo_payload(run_id: str, n: int) -> dict[str, Any]:
    return {
        "id": f"{run_id}-{n}",
        "type": "progress",
        "message": "x" * (PAD - 40),
        "details": {"n": n},
        "timestamp": "2026-04-29T12:00:00Z",
    }


def _serve(q: Queue[int], events: int, runs: int) -> None:
    async def main() -> None:
        sim = ArgaSimulator(TOKEN)
        sim.faults.replay_history = True
        sim.faults.hide_history = True
        sim.faults.coalesce = 128
        for r in range(runs):
            v = sim.add_validation_run(f"sse-{r}", steps=1)
            v.events = [sse_payload(n) for n in range(events)] + [
                {"type": "run_complete", "status": "complete"}
            ]
            v.publish()
            d = sim.add_demo_run(f"ws-{r}", steps=1)
            d.events = [demo_payload(d.run_id, n) for n in range(events)]
            d.publish()
        async with anyio.create_task_group() as tg:
            await tg.start(sim.serve)
            q.put(sim.port)
            await anyio.sleep_forever()

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


async def sse_ceiling(base: str, run_id: str, events: int) -> float:
    start = time.perf_counter()
    count = 0
    async with httpx.AsyncClient(base_url=base, timeout=None, trust_env=False) as client:
        headers = {"authorization": f"Bearer {TOKEN}", "accept": "text/event-stream"}
        async with client.stream("GET", f"/validate/{run_id}/results", headers=headers) as r:
            buf = b""
            async for chunk in r.aiter_bytes():
                buf += chunk
                blocks = buf.split(b"\n\n")
                buf = blocks.pop()
                for block in blocks:
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            orjson.loads(line[6:])
                            count += 1
    assert count == events + 1, count
    return count / (time.perf_counter() - start)


async def ws_ceiling(base: str, run_id: str, events: int) -> float:
    url = base.replace("http://", "ws://") + f"/demo-runner/runs/{run_id}/stream?token={TOKEN}"
    start = time.perf_counter()
    count = 0
    async with connect(url, compression=None, proxy=None) as ws:
        async for message in ws:
            if orjson.loads(message)["type"] == "done":
                break
            count += 1
    assert count == events, count
    return count / (time.perf_counter() - start)


async def argbridge_rate(base: str, kind: str, run_id: str, events: int, state: Path) -> float:
    settings = load_settings(
        None,
        state_dir=str(state),
        http={"enabled": False},
        sources={"arga": {"type": "arga", "base_url": base, "api_key": TOKEN, "poll_interval": 0}},
    )
    config = settings.sources["arga"]
    source = ArgaSource("arga", config, settings)  # type: ignore[arg-type]
    async with Journal(
        state / f"{run_id}.db", sinks=["bench"], max_backlog_events=10**9, max_backlog_bytes=2**40
    ) as journal:
        ctx = SourceContext("arga", journal.for_source(), Metrics())
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, ctx)
            await source.started.wait()
            start = time.perf_counter()
            await source.follow(run_id, kind)
            state_ = source.runs[(kind, run_id)]
            await state_.finished.wait()
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
        assert state_.status == "done", state_.status
        total = journal.last_seq
    expected = events + 1  # + the terminal event / done
    assert total == expected, (total, expected)
    return total / elapsed


async def journal_rate(events: int, state: Path, tag: str) -> float:
    """The journal alone: append_many of ready-made events in batches of 1,000 (the
    same group commits the source makes), for context: it bounds the source figures."""
    from argbridge.normalize.arga import results_event

    ready = [
        results_event(f"j-{tag}", sse_payload(n), upstream_id=str(n + 1)) for n in range(events)
    ]
    async with Journal(
        state / f"journal-{tag}.db",
        sinks=["bench"],
        max_backlog_events=10**9,
        max_backlog_bytes=2**40,
    ) as journal:
        start = time.perf_counter()
        for i in range(0, events, 1000):
            await journal.append_many(ready[i : i + 1000])
        return events / (time.perf_counter() - start)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):>9,.0f} [{min(values):,.0f}..{max(values):,.0f}]"


async def run(args: argparse.Namespace, base: str) -> None:
    results: dict[str, list[float]] = {
        k: [] for k in ("sse_ceil", "sse", "ws_ceil", "ws", "journal", "sqlite")
    }
    # Peak RSS of this process while argbridge (source + journal) ran each load, reset
    # before each run (the bare clients' own peaks are not in it).
    rss: dict[str, list[float]] = {"sse": [], "ws": []}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        for r in range(args.repeat):
            results["sse_ceil"].append(await sse_ceiling(base, f"sse-{r}", args.events))
            reset_peak_rss()
            results["sse"].append(
                await argbridge_rate(base, "validation", f"sse-{r}", args.events, state)
            )
            rss["sse"].append(peak_rss_since_reset_mib())
            results["ws_ceil"].append(await ws_ceiling(base, f"ws-{r}", args.events))
            reset_peak_rss()
            results["ws"].append(await argbridge_rate(base, "demo", f"ws-{r}", args.events, state))
            rss["ws"].append(peak_rss_since_reset_mib())
            results["journal"].append(await journal_rate(args.events, state, str(r)))
            results["sqlite"].append(
                ceiling(state / f"ceiling-{r}.db", args.events, 64, row_bytes=500)
            )
            print(f"  pass {r + 1}/{args.repeat} done", file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nArga sources, {args.events:,} events of ~500 B per run, {args.repeat} run(s);"
        " events/s median [min..max]"
    )
    for label, ceil, got in (
        ("SSE results stream", "sse_ceil", "sse"),
        ("demo-runner WebSocket", "ws_ceil", "ws"),
    ):
        ratio = statistics.median(results[got]) / statistics.median(results[ceil])
        composite = [
            1 / (1 / c + 1 / q) for c, q in zip(results[ceil], results["sqlite"], strict=True)
        ]
        vs = statistics.median(results[got]) / statistics.median(composite)
        print(f"{label}:")
        print(f"  bare client ceiling        {fmt(results[ceil])}")
        print(f"  composite ceiling          {fmt(composite)}  (client + bare SQLite write)")
        print(
            f"  argbridge → journal        {fmt(results[got])}  = {vs:.0%} of the composite, "
            f"{ratio:.0%} of the client"
        )
        print(
            f"  peak RSS while it ran      {max(rss[got]):>9,.0f} MiB  "
            f"(process, reset before each run; runs {', '.join(f'{x:.0f}' for x in rss[got])})"
        )
    print("  (target: ≥50% of each composite ceiling)")
    print(f"bare SQLite ascending write, 500 B rows, 64/txn {fmt(results['sqlite'])}")
    print(f"context: journal alone, append_many of 1000 {fmt(results['journal'])}")
    print(f"client process peak RSS, whole run (bare clients included): {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    q: Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(q, args.events, args.repeat), daemon=True)
    server.start()
    try:
        port = q.get(timeout=120)
        print(as_the_daemon())  # this process only: the fake Arga server keeps Python's defaults
        anyio.run(run, args, f"http://127.0.0.1:{port}", backend_options={"use_uvloop": True})
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
