"""Operations endpoints under load: ``/control/tail`` streaming rate and ``/metrics`` /
``/control/status`` latency, beside the journal's own read rate measured in the same run.

    .venv/bin/python bench/bench_ops.py [--events 50000]

Prints events/s for tailing the whole journal over HTTP (NDJSON, pages of 200) next to
``journal.read_after`` alone (the ceiling: the tail can't beat reading the journal), and
p50/p99 latency of ``/metrics`` and ``/control/status`` scrapes, plus peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from argbridge.config.settings import load_settings
from argbridge.events import CloudEvent, deterministic_id
from argbridge.logging import configure_logging
from argbridge.runtime import App


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(n: int) -> CloudEvent:
    return CloudEvent(
        id=deterministic_id("bench-ops", n),
        source="urn:bench",
        type="arga.validation.step_result",
        subject=f"run-{n % 50}",
        data={"n": n, "pad": "x" * 400},
    )


async def main(events: int) -> None:
    configure_logging("warning", "json")
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        settings = load_settings(
            None,
            state_dir=str(Path(tmp) / "state"),
            http={"enabled": False},
            # The control API (and /metrics) on a loopback TCP port, as figures were taken
            # before the control plane got its own listener.
            control={"port": port},
            # No sinks: nothing else reads the journal while we measure.
        )
        app = App(settings, handle_signals=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.run)
            await app.ready.wait()
            assert app.planes.control_tcp is not None
            await app.planes.control_tcp.started.wait()
            journal = app.journal
            for start in range(0, events, 1000):
                await journal.append_many(
                    [_event(n) for n in range(start, min(events, start + 1000))]
                )
            last = journal.last_seq

            # Ceiling: the journal's read path alone, same pages.
            t0 = time.perf_counter()
            cursor = n_read = 0
            while cursor < last:
                page = await journal.read_after(cursor, 200)
                cursor = page[-1].seq
                n_read += len(page)
            read_rate = n_read / (time.perf_counter() - t0)

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                t0 = time.perf_counter()
                n_tail = 0
                async with c.stream("GET", "/control/tail", params={"after": 0}) as response:
                    async for line in response.aiter_lines():
                        if line:
                            n_tail += 1
                tail_rate = n_tail / (time.perf_counter() - t0)
                assert n_tail == last, (n_tail, last)

                lat: dict[str, list[float]] = {"/metrics": [], "/control/status": []}
                for _ in range(200):
                    for path, samples in lat.items():
                        t = time.perf_counter()
                        r = await c.get(path)
                        samples.append((time.perf_counter() - t) * 1000)
                        assert r.status_code in (200, 503)

            app.request_shutdown()
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"events journaled: {last}")
        print(f"journal.read_after (ceiling, same run): {read_rate:,.0f} events/s")
        print(
            f"/control/tail over HTTP (NDJSON):       {tail_rate:,.0f} events/s "
            f"({tail_rate / read_rate:.0%} of the ceiling)"
        )
        for path, samples in lat.items():
            q = statistics.quantiles(samples, n=100)
            print(f"{path:<16} latency p50 {q[49]:.2f} ms  p99 {q[98]:.2f} ms  (200 requests)")
        print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    anyio.run(main, args.events, backend="asyncio", backend_options={"use_uvloop": True})
    sys.exit(0)
