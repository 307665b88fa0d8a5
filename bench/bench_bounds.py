"""Bounded resources (issue 17), measured from the outside on a daemon subprocess.

Run from the repository root: ``.venv/bin/python -m bench.bench_bounds`` (``--quick``: a
short smoke run; ``--phase burst``, ``drain`` or ``cpu`` for one of them).
Apache Kafka (one KRaft node, from the jars of ``tests/support/kafka_dist.py``) behind
a TCP proxy the bench can cut; the Arga simulator in this process on a free loopback
port; ``argbridge run`` as a subprocess; its RSS read from ``/proc/PID/status`` and its
state from ``GET /control/status`` (on its control socket). The daemon runs with its
default ``runtime`` settings unless ``--env NAME=VALUE`` adds to its environment (e.g.
``MALLOC_ARENA_MAX=2``).

1. **burst** (items 1, 3, 4, 8): the daemon starts with Kafka cut off and idles
   ``--idle`` s (RSS *before*); 40 validation runs of 2,000 events (~500 B average)
   are followed and streamed as fast as the simulator writes (the default stream cap
   of 10); after ``--outage`` s (RSS *paused*, the slowest sink's backlog) Kafka comes
   back: time to the first delivery, RSS *peak* while draining (``VmHWM``), and RSS
   ``--after`` s after the backlog reached 0. Printed: the backlog's peak over the cap
   (``journal.max_backlog_events = 5000``) and its hard bound.
2. **drain** (item 2): 100,000 events of 1 KiB (``--drain-size``) journaled before the
   daemon starts, then drained to Kafka: the daemon's peak RSS (``VmHWM``) and the drain
   rate. Target: <= 150 MiB. ``--batch-bytes`` sets the sink's ``batch_bytes``.
3. **cpu** (item 6): signed Argus webhooks at fixed rates (``--rates``, default 100, 400
   and 2,000 a second; a keep-alive sender of pre-signed requests,
   ``tests/support/webhook_load.py``) → journal → Kafka: the daemon's CPU time per
   event and cores used, its context switches, and commit → Kafka ack p50/p99 from its
   own histogram. Target: <= 0.15 core at 400 ev/s with p99 < 25 ms.
   ``--read-linger``, ``--fsync-acks`` and ``--group-linger`` set what the comparison
   needs.
4. **mixed** (item 6, only when asked): the 30-minute soak's load (200 Arga runs
   streaming one event a second each + 200 signed webhooks a second), the load item 6
   first measured, in ``--mixed-windows`` windows of ``--cpu-seconds`` after
   ``--warm-up``: cores, CPU per event, context switches, commit -> ack p99.

``--runtime 'KEY = VALUE'`` adds a ``[runtime]`` line (e.g. ``trim_after_burst = false``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from tests.support import procmem
from tests.support.apache_kafka import KafkaCluster, _free_ports, start_kafka
from tests.support.process import logged_daemon
from tests.support.webhook_load import drive, signed_request

from argbridge.events import CloudEvent, deterministic_id
from argbridge.journal import Journal
from argbridge.journal.backpressure import MIN_SLACK_EVENTS, hard_bound
from argbridge.simulator.arga import ArgaSimulator
from bench import memprobe

MiB = 1024 * 1024
TOKEN = "arga_sk_bench_bounds_0123456789"
CAP = 5000


def row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<44} {value:>14}  {note}", flush=True)


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    return proc_status(pid)[key] / MiB


def reset_hwm(pid: int) -> None:
    """Reset the peak RSS (``VmHWM``) to the current RSS (Linux: ``clear_refs`` 5)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


def config_toml(
    state: Path,
    port: int,
    bootstrap: str,
    *,
    cap: int,
    runs: list[str],
    sim_url: str | None,
    batch_bytes: str = "4MiB",
    read_linger: str | None = None,
    fsync_acks: bool = False,
    runtime: list[str] | None = None,
    group_linger: str | None = None,
    webhooks: bool = False,
    max_streams: int | None = None,
) -> str:
    """``max_streams``: the Arga source's open streams (``None``: its default, 10)."""
    lines = [
        f'state_dir = "{state}"',
        "[log]",
        'level = "warning"',
        'format = "json"',
        "[http]",
        "enabled = true",
        'host = "127.0.0.1"',
        f"port = {port}",
        "[journal]",
        f"max_backlog_events = {cap}",
        f"fsync_acks = {'true' if fsync_acks else 'false'}",
        *([f'group_linger = "{group_linger}"'] if group_linger is not None else []),
        "[runtime]",
        *(runtime or []),
        "[sinks.kafka]",
        'type = "kafka"',
        f'bootstrap_servers = "{bootstrap}"',
        'topic = "bounds"',
        f'batch_bytes = "{batch_bytes}"',
        *([f'read_linger = "{read_linger}"'] if read_linger is not None else []),
        "request_timeout = 5.0",
        "call_timeout = 10.0",
        "[[routes]]",
        'sinks = ["kafka"]',
    ]
    if sim_url is not None:
        lines += [
            "[sources.arga]",
            'type = "arga"',
            f'base_url = "{sim_url}"',
            f'api_key = "{TOKEN}"',
            "poll_interval = 0",
            *([f"max_streams = {max_streams}"] if max_streams is not None else []),
            f"runs = [{', '.join(repr(r).replace(chr(39), chr(34)) for r in runs)}]",
        ]
    if sim_url is None or webhooks:
        from tests.support.webhooks import SECRET

        lines += ["[sources.argus]", 'type = "argus-webhook"', f'secrets = ["{SECRET}"]']
    return "\n".join(lines) + "\n"


def control(state: Path) -> httpx.AsyncClient:
    """A client of the daemon's control plane (``/control/...``, ``/metrics``): its Unix
    socket under the state dir (the public listener serves webhooks and probes only)."""
    transport = httpx.AsyncHTTPTransport(uds=str(state / "control.sock"))
    return httpx.AsyncClient(transport=transport, base_url="http://argbridge", timeout=5)


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/control/status")
    doc: dict[str, Any] = response.json()
    return doc


async def wait_status(
    client: httpx.AsyncClient, pred: Any, *, within: float, poll: float = 0.02
) -> dict[str, Any]:
    """Poll the daemon (an outside process) until ``pred(doc)``; bounded."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            doc = await status(client)
            if pred(doc):
                return doc
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not get there in time")
        await anyio.sleep(poll)


@contextlib.asynccontextmanager
async def arga_simulator(runs: int, events: int) -> AsyncIterator[ArgaSimulator]:
    sim = ArgaSimulator(TOKEN, heartbeat=5.0)
    sim.faults.replay_history = True
    sim.faults.coalesce = 64
    steps = (events - 2) // 2
    for n in range(runs):
        run = sim.add_validation_run(f"burst-{n:02d}", steps=steps, pad=800)
        run.publish()
    async with sim.running():
        yield sim


def where(args: argparse.Namespace, pid: int, name: str) -> None:
    """With ``--probe``: where the daemon's memory is (bench/memprobe)."""
    if args.probe is None:
        return
    print(f"  {name}: {procmem.summary(pid)}")
    print(memprobe.probe(args.probe, name), flush=True)
    print(f"  {name}: RSS {rss_mib(pid):.1f} MiB")
    if name == "after":  # what a trim now would still give back
        print(memprobe.probe(args.probe, "after-trim"), flush=True)
        print(f"  after-trim: RSS {rss_mib(pid):.1f} MiB", flush=True)


async def burst(
    kafka: KafkaCluster, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, float]:
    assert kafka.proxy is not None
    root = Path(tempfile.mkdtemp(prefix="bench-bounds-"))
    [port] = _free_ports(1)
    runs = [f"burst-{n:02d}" for n in range(args.runs)]
    out: dict[str, float] = {}
    kafka.proxy.cut()
    async with arga_simulator(args.runs, args.events) as sim:
        config = root / "argbridge.toml"
        config.write_text(
            config_toml(
                root / "state",
                port,
                kafka.bootstrap_for("PROXIED"),
                cap=CAP,
                runs=runs,
                sim_url=sim.base_url,
                runtime=args.runtime,
                max_streams=args.burst_streams,
            )
        )
        # The daemon starts idle: the runs are in its config, but the simulator holds
        # every stream request until the gate opens.
        gate = anyio.Event()
        sim.faults.gate = gate
        sim.faults.gate_after = 0
        with logged_daemon(config, env) as proc:
            async with control(root / "state") as c:
                await wait_status(
                    c, lambda d: "journal" in d, within=600 if args.tracemalloc else 120
                )
                await anyio.sleep(args.idle)
                out["rss_before"] = rss_mib(proc.pid)
                where(args, proc.pid, "idle")
                reset_hwm(proc.pid)
                gate.set()
                started = time.monotonic()
                # Paused: the journal's backlog stops growing while Kafka is away.
                await anyio.sleep(args.outage)
                doc = await status(c)
                backlog = doc["sinks"]["kafka"]["backlog"]
                out["backlog_paused"] = backlog
                out["rss_paused"] = rss_mib(proc.pid)
                out["rss_peak_burst"] = rss_mib(proc.pid, "VmHWM")
                out["paused"] = float(doc["paused"])
                reset_hwm(proc.pid)
                kafka.proxy.restore()
                back = time.monotonic()
                await wait_status(c, lambda d: d["sinks"]["kafka"]["sent"] > 0, within=120)
                out["first_delivery_s"] = time.monotonic() - back
                if args.probe is not None:
                    await anyio.sleep(5.0)
                    print(f"  draining: RSS {rss_mib(proc.pid):.1f} MiB")
                    where(args, proc.pid, "draining")
                total = args.runs * args.events
                done = await wait_status(
                    c,
                    lambda d: (
                        d["sinks"]["kafka"]["backlog"] == 0 and d["journal"]["last_seq"] >= total
                    ),
                    within=600,
                    poll=0.1,
                )
                out["drained_s"] = time.monotonic() - back
                out["delivered"] = done["sinks"]["kafka"]["sent"]
                out["rss_peak_drain"] = rss_mib(proc.pid, "VmHWM")
                await anyio.sleep(args.after)
                out["rss_after"] = rss_mib(proc.pid)
                where(args, proc.pid, "after")
                out["burst_s"] = time.monotonic() - started
    shutil.rmtree(root, ignore_errors=True)
    return out


async def fill(path: Path, count: int, size: int) -> None:
    pad = "x" * size
    async with Journal(
        path, sinks=["kafka"], max_backlog_events=10 * count, max_backlog_bytes=1 << 40
    ) as journal:
        for start in range(0, count, 2000):
            await journal.append_many(
                [
                    CloudEvent(
                        id=deterministic_id("bench", str(n)),
                        source="urn:bench",
                        type="bench.drain",
                        subject=f"run-{n % 64}",
                        partitionkey=f"run-{n % 64}",
                        data={"n": n, "pad": pad},
                    )
                    for n in range(start, min(count, start + 2000))
                ]
            )


async def drain(
    kafka: KafkaCluster, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    [port] = _free_ports(1)
    state = root / "state"
    state.mkdir()
    await fill(state / "journal", args.drain_events, args.drain_size - 160)
    config = root / "argbridge.toml"
    config.write_text(
        config_toml(
            state,
            port,
            kafka.bootstrap,
            cap=10 * args.drain_events,
            runs=[],
            sim_url=None,
            batch_bytes=args.batch_bytes,
        )
    )
    out: dict[str, float] = {}
    with logged_daemon(config, env) as proc:
        async with control(state) as c:
            started = time.monotonic()
            await wait_status(
                c, lambda d: d["sinks"]["kafka"]["backlog"] == 0, within=600, poll=0.1
            )
            elapsed = time.monotonic() - started
            out["drain_rate"] = args.drain_events / elapsed
            # Start-up included: the daemon's whole CPU time over the events it drained.
            out["cpu_per_event"] = (
                cpu_ticks(proc.pid) / os.sysconf("SC_CLK_TCK") / args.drain_events
            )
            out["rss_peak"] = rss_mib(proc.pid, "VmHWM")
            out["rss_end"] = rss_mib(proc.pid)
    shutil.rmtree(root, ignore_errors=True)
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def context_switches(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/status") as fh:
            for line in fh:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def latency_buckets(text: str) -> dict[float, float]:
    """Cumulative counts of the Kafka sink's commit -> ack histogram, by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "argbridge_delivery_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("component") == "kafka":
                out[float(sample.labels["le"])] = sample.value
    return out


def quantile(buckets: dict[float, float], q: float) -> float:
    """``q`` of a cumulative histogram, interpolated inside its bucket (Prometheus-like)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def load_toml(
    root: Path,
    port: int,
    kafka: KafkaCluster,
    args: argparse.Namespace,
    *,
    runs: list[str],
    sim_url: str | None,
    webhooks: bool = False,
) -> str:
    """The daemon's config for the load phases (cpu, mixed): no cap in the way, and the
    lingers, ``fsync_acks`` and ``[runtime]`` lines the command line sets."""
    return config_toml(
        root / "state",
        port,
        kafka.bootstrap,
        cap=100_000,
        runs=runs,
        sim_url=sim_url,
        read_linger=args.read_linger,
        fsync_acks=args.fsync_acks,
        group_linger=args.group_linger,
        runtime=args.runtime,
        webhooks=webhooks,
        max_streams=max(10, len(runs)),
    )


async def cpu(kafka: KafkaCluster, args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    """CPU per event and commit -> Kafka ack latency at fixed webhook rates; with
    ``--floor``, the same rates against :mod:`bench.floor_webhook` after the daemon."""
    root = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    [port] = _free_ports(1)
    config = root / "argbridge.toml"
    config.write_text(load_toml(root, port, kafka, args, runs=[], sim_url=None))
    lines = []
    with logged_daemon(config, env) as proc:
        async with control(root / "state") as c:
            await wait_status(c, lambda d: d["sinks"]["kafka"]["ready"], within=60)

            async def drained() -> tuple[str, int]:
                await wait_status(
                    c, lambda d: d["sinks"]["kafka"]["backlog"] == 0, within=60, poll=0.05
                )
                return (await c.get("/metrics")).text, (await status(c))["journal"]["commits"]

            lines += await at_rates("daemon", proc.pid, port, args, drained)
    if args.floor:
        kafka.create_topic("floor", partitions=4)
        variants = [("floor", []), ("raw", ["--raw"])]
        if args.floor_linger:
            group_ms, kafka_ms = args.floor_linger.split("/")
            variants.append(
                (
                    f"raw-{group_ms}/{kafka_ms}ms",
                    [
                        "--raw",
                        "--linger",
                        str(float(group_ms) / 1000),
                        "--kafka-linger-ms",
                        kafka_ms,
                    ],
                )
            )
        if args.floor_stages:
            variants += [
                ("raw-nokafka", ["--raw", "--skip", "kafka"]),
                ("raw-nojournal", ["--raw", "--skip", "journal"]),
                ("raw-http", ["--raw", "--skip", "kafka", "--skip", "journal"]),
            ]
        for who, extra in variants:
            lines += await floor_at_rates(who, extra, root / who, kafka.bootstrap, args)
    shutil.rmtree(root, ignore_errors=True)
    return lines


async def mixed(kafka: KafkaCluster, args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    """The 30-minute soak's load (tests/test_soak.py), in windows of ``--cpu-seconds``:
    ``--mixed-runs`` Arga runs streaming one ~500 B event a second each, plus
    ``--mixed-webhooks`` signed Argus webhooks a second (16 keep-alive connections), all
    to Kafka. Per window: cores, CPU per event, context switches, commit -> ack."""
    root = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    [port] = _free_ports(1)
    names = [f"mixed-{n:03d}" for n in range(args.mixed_runs)]
    windows = args.mixed_windows
    span = args.warm_up + windows * (args.cpu_seconds + 2) + 60
    sim = ArgaSimulator(TOKEN, heartbeat=5.0)
    runs = [sim.add_validation_run(name, steps=int(span) + 60, pad=400) for name in names]
    hz = os.sysconf("SC_CLK_TCK")
    lines: list[str] = []
    async with sim.running():
        config = root / "argbridge.toml"
        config.write_text(
            load_toml(root, port, kafka, args, runs=names, sim_url=sim.base_url, webhooks=True)
        )
        with logged_daemon(config, env) as proc:
            async with control(root / "state") as c:
                await wait_status(c, lambda d: d["sinks"]["kafka"]["ready"], within=60)
                end = time.monotonic() + span

                async def publish() -> None:
                    # As the soak does: every run's event at the same instant each second
                    # (a burst of len(runs) events); with --mixed-spread, each run at its
                    # own phase of the second (a steady rate).
                    step = 1.0 / len(runs) if args.mixed_spread else 0.0
                    tick = time.monotonic()
                    while time.monotonic() < end:
                        for k, run in enumerate(runs):
                            if step:
                                await anyio.sleep(max(0.0, tick + k * step - time.monotonic()))
                            run.publish(1)
                        tick += 1.0
                        await anyio.sleep(max(0.0, tick - time.monotonic()))

                async def webhooks() -> None:
                    await drive(
                        port,
                        lambda n: signed_request(port, n, pad=200),
                        args.mixed_webhooks,
                        until=end,
                        connections=16,
                    )

                async with anyio.create_task_group() as tg:
                    tg.start_soon(publish)
                    if args.mixed_webhooks > 0:  # 0: the streams alone
                        tg.start_soon(webhooks)
                    await anyio.sleep(args.warm_up)
                    for _ in range(windows):
                        doc0, text0 = await status(c), (await c.get("/metrics")).text
                        t0, ticks0, sw0 = time.monotonic(), cpu_ticks(proc.pid), 0
                        sw0 = context_switches(proc.pid)
                        await anyio.sleep(args.cpu_seconds)
                        doc1, text1 = await status(c), (await c.get("/metrics")).text
                        t1, ticks1 = time.monotonic(), cpu_ticks(proc.pid)
                        sw1 = context_switches(proc.pid)
                        wall, used = t1 - t0, (ticks1 - ticks0) / hz
                        events = doc1["journal"]["last_seq"] - doc0["journal"]["last_seq"]
                        hist0, hist1 = latency_buckets(text0), latency_buckets(text1)
                        delta = {b: hist1[b] - hist0.get(b, 0.0) for b in hist1}
                        under = delta.get(0.025, 0.0) / max(1.0, delta.get(float("inf"), 0.0))
                        commits = doc1["journal"]["commits"] - doc0["journal"]["commits"]
                        p50, p90, p99 = (1e3 * quantile(delta, q) for q in (0.5, 0.9, 0.99))
                        line = (
                            f"  mixed {events / wall:5.0f} ev/s: {used / wall:5.3f} core, "
                            f"{1e6 * used / max(1, events):5.0f} µs CPU/event, "
                            f"{(sw1 - sw0) / wall:5.0f} ctx switches/s, commit->ack p50 "
                            f"{p50:4.1f} p90 {p90:4.1f} p99 {p99:4.1f} ms "
                            f"({100 * under:.1f}% <= 25 ms), "
                            f"{commits / max(1, events):.2f} group commits/event"
                        )
                        lines.append(line)
                        print(line, flush=True)
                    tg.cancel_scope.cancel()
    shutil.rmtree(root, ignore_errors=True)
    return lines


async def floor_at_rates(
    who: str, extra: list[str], state: Path, bootstrap: str, args: argparse.Namespace
) -> list[str]:
    """:func:`at_rates` against :mod:`bench.floor_webhook` (``--raw`` in ``extra``: its
    httptools protocol instead of uvicorn); each rate ends once Kafka acked all sent."""
    [port] = _free_ports(1)
    with floor_server(state, port, bootstrap, extra) as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await wait_answering(c)
            accepted = [0]  # answered 200: the floor owes each a Kafka ack

            async def acked_all() -> tuple[str, int]:
                deadline = time.monotonic() + 60
                acked = 0
                while time.monotonic() < deadline:  # an outside process: its state
                    acked = int((await c.get("/acked")).text)
                    if acked >= accepted[0]:
                        return "", 0
                    await anyio.sleep(0.05)
                log = state.with_suffix(".log").read_bytes()[-2000:].decode(errors="replace")
                raise TimeoutError(
                    f"{who}: Kafka acked {acked} of the {accepted[0]} accepted requests "
                    f"within 60 s; the floor's log ends:\n{log}"
                )

            return await at_rates(who, proc.pid, port, args, acked_all, accepted=accepted)


async def at_rates(
    who: str,
    pid: int,
    port: int,
    args: argparse.Namespace,
    drained: Callable[[], Awaitable[tuple[str, int]]],
    *,
    accepted: list[int] | None = None,
) -> list[str]:
    """Drive ``--rates`` of signed webhooks at ``port`` (2 s of warm-up each, then
    ``--cpu-seconds``); after each rate, ``drained()`` returns once everything sent was
    acked by Kafka, with the metrics text and the journal's commit count (the daemon)."""
    hz = os.sysconf("SC_CLK_TCK")
    lines = []
    offset = 0
    for rate in args.rates:
        count = int(rate * (args.cpu_seconds + 2))
        requests = [signed_request(port, offset + i) for i in range(count)]
        offset += count
        warm = int(rate * 2)
        _, ok = await drive(port, requests.__getitem__, rate, count=warm)
        if accepted is not None:
            accepted[0] += ok
        hist0_text, commits0 = await drained()
        before = (cpu_ticks(pid), context_switches(pid), time.monotonic())
        sent, ok = await drive(port, requests[warm:].__getitem__, rate, count=count - warm)
        if accepted is not None:
            accepted[0] += ok
        hist1_text, commits1 = await drained()
        ticks, switches, t1 = cpu_ticks(pid), context_switches(pid), time.monotonic()
        wall = t1 - before[2]
        used = (ticks - before[0]) / hz
        line = (
            f"  {who:>13} {rate:>6.0f} ev/s: {used / wall:5.3f} core, "
            f"{1e6 * used / max(1, sent):7.0f} µs CPU/event, "
            f"{(switches - before[1]) / wall:6.0f} ctx switches/s"
        )
        if hist1_text:
            hist0, hist1 = latency_buckets(hist0_text), latency_buckets(hist1_text)
            delta = {b: hist1[b] - hist0.get(b, 0.0) for b in hist1}
            under = delta.get(0.025, 0.0) / max(1.0, delta.get(float("inf"), 0.0))
            line += (
                f", commit->ack p50 {1e3 * quantile(delta, 0.5):5.1f} ms "
                f"p99 {1e3 * quantile(delta, 0.99):5.1f} ms "
                f"({100 * under:.1f}% <= 25 ms), {ok} of {sent} accepted, "
                f"{(commits1 - commits0) / max(1, sent):.2f} group commits/event"
            )
        else:
            line += f", {sent} sent, {ok} answered 200, every one of those acked by Kafka"
        lines.append(line)
        print(line, flush=True)
    return lines


@contextlib.contextmanager
def floor_server(
    state: Path, port: int, bootstrap: str, extra: list[str]
) -> Iterator[subprocess.Popen[bytes]]:
    """:mod:`bench.floor_webhook` as a subprocess (stopped with SIGTERM)."""
    state.mkdir(parents=True)
    with open(state.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.floor_webhook",
                "--port",
                str(port),
                "--bootstrap",
                bootstrap,
                "--topic",
                "floor",
                "--state",
                str(state / "db"),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_answering(c: httpx.AsyncClient, within: float = 60.0) -> None:
    """Poll the floor server (an outside process) until it answers, with a deadline."""
    deadline = time.monotonic() + within
    while True:
        try:
            await c.get("/acked")
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.1)


def parse_env(items: list[str], args: argparse.Namespace) -> dict[str, str]:
    env = memprobe.env(args.probe, tracemalloc=args.tracemalloc) if args.probe else {}
    for item in items:
        name, _, value = item.partition("=")
        env[name] = value
    return env


async def main(args: argparse.Namespace) -> None:
    env = parse_env(args.env, args)
    root = Path(tempfile.mkdtemp(prefix="bench-bounds-kafka-"))
    kafka = start_kafka(root, proxied=True)
    try:
        kafka.create_topic("bounds", partitions=4)
        print(
            f"argbridge bounds bench — Apache Kafka {kafka.version}, env {env or '-'}, "
            f"runtime {args.runtime or '-'}"
        )
        if args.phase in ("all", "burst"):
            b = await burst(kafka, args, env)
            bound = hard_bound(CAP, MIN_SLACK_EVENTS)
            print(f"burst: {args.runs} runs x {args.events} events, Kafka away {args.outage} s")
            row("slowest sink's backlog while paused", f"{b['backlog_paused']:.0f}", f"cap {CAP}")
            row("  over the cap", f"{b['backlog_paused'] - CAP:+.0f}", f"bound +{bound - CAP}")
            row("RSS idle before the burst", f"{b['rss_before']:.1f} MiB", f"after {args.idle} s")
            row("RSS while paused", f"{b['rss_paused']:.1f} MiB")
            row("RSS peak while streaming (paused)", f"{b['rss_peak_burst']:.1f} MiB")
            row("RSS peak while draining", f"{b['rss_peak_drain']:.1f} MiB")
            row(
                f"RSS {args.after} s after the backlog reached 0",
                f"{b['rss_after']:.1f} MiB",
                f"{100 * (b['rss_after'] / b['rss_before'] - 1):+.0f}% vs before (target <= +25%)",
            )
            row("broker back -> first delivery", f"{b['first_delivery_s']:.2f} s")
            row("broker back -> backlog 0", f"{b['drained_s']:.2f} s")
            row("delivered", f"{b['delivered']:.0f}")
        if args.phase in ("all", "cpu"):
            print(
                f"cpu: signed Argus webhooks at fixed rates -> journal -> Kafka, "
                f"{args.cpu_seconds} s each, read_linger {args.read_linger or 'default'}, "
                f"fsync_acks {args.fsync_acks}, group_linger {args.group_linger or 'default'}"
            )
            await cpu(kafka, args, env)
        if args.phase == "mixed":
            print(
                f"mixed: the soak's load, {args.mixed_runs} Arga runs at 1 event/s each + "
                f"{args.mixed_webhooks:g} signed webhooks/s -> journal -> Kafka, "
                f"{args.warm_up:g} s warm-up, {args.cpu_seconds:g} s windows"
            )
            await mixed(kafka, args, env)
        if args.phase in ("all", "drain"):
            d = await drain(kafka, args, env)
            print(
                f"drain: {args.drain_events} x {args.drain_size} B pre-journaled, drained to "
                f"Kafka (batch_bytes {args.batch_bytes})"
            )
            row("RSS peak while draining", f"{d['rss_peak']:.1f} MiB", "target <= 150 MiB")
            row("RSS at the end", f"{d['rss_end']:.1f} MiB")
            row("drain rate", f"{d['drain_rate']:.0f} ev/s")
            row(
                "daemon CPU per event drained",
                f"{1e6 * d['cpu_per_event']:.0f} µs",
                "start-up incl.",
            )
    finally:
        kafka.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("all", "burst", "drain", "cpu", "mixed"), default="all")
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 400.0, 2000.0])
    parser.add_argument("--cpu-seconds", type=float, default=20.0)
    parser.add_argument("--read-linger", help="the Kafka sink's read_linger (e.g. 5ms)")
    parser.add_argument("--fsync-acks", action="store_true", help="journal.fsync_acks = true")
    parser.add_argument("--group-linger", help="journal.group_linger (e.g. 0, 2ms)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="cpu: also measure bench/floor_webhook.py (the stack's floor) at the same rates",
    )
    parser.add_argument(
        "--floor-linger",
        metavar="GROUP_MS/KAFKA_MS",
        help="with --floor: also the raw floor with these lingers (e.g. 10/15)",
    )
    parser.add_argument(
        "--floor-stages",
        action="store_true",
        help="with --floor: also the raw floor without Kafka, without the journal, and both",
    )
    parser.add_argument("--mixed-runs", type=int, default=200, help="mixed: streaming runs")
    parser.add_argument(
        "--mixed-webhooks", type=float, default=200.0, help="mixed: webhooks/s (0: streams only)"
    )
    parser.add_argument("--mixed-windows", type=int, default=3, help="mixed: windows measured")
    parser.add_argument(
        "--mixed-spread",
        action="store_true",
        help="mixed: each run publishes at its own phase of the second (not all at once)",
    )
    parser.add_argument("--warm-up", type=float, default=20.0, help="mixed: seconds before")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument(
        "--burst-streams",
        type=int,
        default=None,
        help="the burst's max_streams (default: the Arga source's, 10, as in issue 17's "
        "run; from 2026-12-02 15:07 to 2026-12-03 the burst ran all 40 at once by mistake)",
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--drain-events", type=int, default=100_000)
    parser.add_argument("--drain-size", type=int, default=1024, help="bytes per event")
    parser.add_argument("--batch-bytes", default="4MiB", help="the Kafka sink's batch_bytes")
    parser.add_argument(
        "--probe",
        type=Path,
        help="a directory: load bench/memprobe into the daemon and print where its memory is",
    )
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames, with --probe")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon")
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        help="a [runtime] line: trim_after_burst=false",
    )
    ns = parser.parse_args()
    if ns.quick:  # smaller defaults; options given explicitly still win
        quick = {"runs": 12, "events": 1000, "idle": 3.0, "outage": 8.0, "after": 8.0}
        quick["drain_events"] = 20_000
        for name, value in quick.items():
            if getattr(ns, name) == parser.get_default(name):
                setattr(ns, name, value)
    anyio.run(main, ns, backend="asyncio")
