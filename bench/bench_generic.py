"""Generic ``sse`` source vs the ``arga`` source on the same stream, into the journal.

Both follow pre-published Arga validation runs (N events of ~500 bytes, SSE ids, frames
written 128 per chunk) served by the Arga simulator in a separate process (the server of
bench_arga.py), into a journal with persistence on. The generic source is configured as a
user would (bearer auth, ``terminal = "starts_with(type, 'run_')"``); both share the SSE
decoder, the reconnect policy, the commit pipeline and the stream-follower skeleton, and
differ in normalisation (the Arga normaliser vs the generic event shape). Runs alternate
(arga, generic, generic, arga, …) so drift on a shared machine hits both.

Issue 16's target: the generic path costs no more than 10% extra per event.

Usage: ``.venv/bin/python -m bench.bench_generic [--events 50000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path

import anyio

from argbridge.config.settings import load_settings
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.registry import build_source
from argbridge.sources.base import SourceContext
from argbridge.sources.sse import SSESource
from bench.bench_arga import TOKEN, _serve, argbridge_rate, fmt
from bench.common import as_the_daemon, peak_rss_mib


async def generic_rate(base: str, run_id: str, events: int, state: Path) -> float:
    settings = load_settings(
        None,
        state_dir=str(state),
        http={"enabled": False},
        sources={
            "g": {
                "type": "sse",
                "url": f"{base}/validate/{run_id}/results",
                "auth": {"type": "bearer", "secret": TOKEN},
                "run_id": run_id,
                "ce_type": "arga.validation",
                "terminal": "starts_with(type, 'run_')",
            }
        },
    )
    source = build_source("g", settings.sources["g"], settings)
    assert isinstance(source, SSESource)
    async with Journal(
        state / f"g-{run_id}.db", sinks=["bench"], max_backlog_events=10**9, max_backlog_bytes=2**40
    ) as journal:
        ctx = SourceContext("g", journal, Metrics())
        async with anyio.create_task_group() as tg:
            start = time.perf_counter()
            tg.start_soon(source.run, ctx)
            await source.stopped.wait()
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
        assert source.status == "done", source.status
        total = journal.last_seq
    assert total == events + 1, (total, events + 1)
    return total / elapsed


async def run(args: argparse.Namespace, base: str) -> None:
    arga: list[float] = []
    generic: list[float] = []
    # CPU time of this process per event (the server is another process): the cost of a
    # path, less sensitive than wall time to other load on a shared machine.
    arga_cpu: list[float] = []
    generic_cpu: list[float] = []

    async def one_arga(run_id: str) -> None:
        cpu = time.process_time()
        arga.append(await argbridge_rate(base, "validation", run_id, args.events, state))
        arga_cpu.append((time.process_time() - cpu) * 1e6 / (args.events + 1))

    async def one_generic(run_id: str) -> None:
        cpu = time.process_time()
        generic.append(await generic_rate(base, run_id, args.events, state))
        generic_cpu.append((time.process_time() - cpu) * 1e6 / (args.events + 1))

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        for r in range(args.repeat):
            a, g = f"sse-{2 * r}", f"sse-{2 * r + 1}"
            if r % 2 == 0:
                await one_arga(a)
                await one_generic(g)
            else:
                await one_generic(g)
                await one_arga(a)
            print(f"  pass {r + 1}/{args.repeat} done", file=sys.stderr)
    a_us = 1e6 / statistics.median(arga)
    g_us = 1e6 / statistics.median(generic)
    a_cpu, g_cpu = statistics.median(arga_cpu), statistics.median(generic_cpu)
    print(
        f"\nSSE → journal, {args.events:,} events of ~500 B per run, {args.repeat} run(s);"
        " events/s median [min..max]"
    )
    print(f"  arga source                {fmt(arga)}  ({a_us:.1f} µs/event wall, {a_cpu:.1f} CPU)")
    print(
        f"  generic sse source         {fmt(generic)}  ({g_us:.1f} µs/event wall, {g_cpu:.1f} CPU)"
    )
    print(
        f"  generic extra per event    {g_us / a_us - 1:+.1%} wall, {g_cpu / a_cpu - 1:+.1%} CPU"
        "  (target: ≤ +10%)"
    )
    print(f"client process peak RSS: {peak_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    q: Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(q, args.events, 2 * args.repeat), daemon=True)
    server.start()
    try:
        port = q.get(timeout=120)
        print(as_the_daemon())
        anyio.run(run, args, f"http://127.0.0.1:{port}", backend_options={"use_uvloop": True})
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
