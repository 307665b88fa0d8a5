"""Sink benchmarks: journal → Kafka (beside a bare aiokafka batch producer and a bare
librdkafka producer in the same run), journal → signed webhooks, and journal-commit →
Kafka-ack latency at a fixed rate.

Run from the repository root: ``.venv/bin/python -m bench.bench_sinks`` (``--quick``: a
short smoke run).
Everything runs on this machine: one Apache Kafka broker (KRaft, the newest 4.x, from the
tests' Maven cache: :func:`tests.support.apache_kafka.start_kafka` with the JVM options of
``kafka-server-start.sh``) on free loopback ports, a fresh 4-partition topic for every
measurement; a uvicorn receiver for the webhooks; the journal in a temp dir (format 3:
LevelDB, a synced write batch of the log per group commit). The process is set up as the daemon
sets itself up (:func:`bench.common.as_the_daemon`: uvloop, the default ``runtime`` gc
and malloc settings, the start-up heap frozen) and the sink worker routes with the
daemon's router (``[ops]`` routes included); the bare producers run in the same process.

1. **Kafka throughput**, 1 KiB values, acks=all, idempotence on, topic with 4 partitions,
   64 keys: (a) the ceiling: a bare aiokafka producer filling 1 MiB ``create_batch``
   builders per partition with pre-encoded records (the same key, value and ``ce_*``
   headers the sink sends), 4 batches in flight; (b) a bare librdkafka producer
   (``confluent-kafka``, C, its own threads) sending the same records; (c) argbridge:
   the events pre-journaled, then a :class:`SinkWorker` + :class:`KafkaSink` with its
   defaults (idempotent, acks=all) draining the journal — target ≥ 60 % of (a). Also
   printed: this process's CPU time per event for (a) and (c).
2. **Webhook throughput**: journal → :class:`WebhookSink` → local receiver answering 204
   (the receiver does not verify, so the figure is the sender's; the tests verify).
3. **Latency**: events appended at 2,000/s for ``--seconds``; for each event, from the
   moment its append committed (``append_many`` returned) to the moment the Kafka sink
   confirmed its batch (every record acked by the broker); first 2 s dropped.
   Target p99 < 25 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from tests.support.apache_kafka import PRODUCTION_JVM, KafkaCluster, start_kafka
from tests.support.receivers import serve

from argbridge.backoff import Backoff
from argbridge.config.settings import Settings, load_settings
from argbridge.delivery.kafka_records import build_record
from argbridge.events import CloudEvent, deterministic_id
from argbridge.http.asgi import Request, Response, Router
from argbridge.journal import Journal
from argbridge.logging import configure_logging
from argbridge.metrics import Metrics
from argbridge.router import Router as EventRouter
from argbridge.sinks.base import Delivery, SinkContext, SinkWorker
from argbridge.sinks.kafka import KafkaSink
from argbridge.sinks.webhook import WebhookSink
from bench.common import as_the_daemon

PAD = "x" * 900  # ≈ 1 KiB of data per event once serialised
KEYS = 64


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def event(n: int) -> CloudEvent:
    run = f"run-{n % KEYS}"
    return CloudEvent(
        id=deterministic_id("bench", n),
        source="urn:arga:bench",
        type="arga.validation.step_result",
        subject=f"runs/{run}",
        time="2026-01-01T00:00:00.000Z",
        partitionkey=run,
        sequence=n,
        data={"run_id": run, "n": n, "status": "passed", "pad": PAD},
    )


def row(label: str, value: str, note: str = "") -> None:
    print(f"   {label:<52} {value:>18}  {note}", flush=True)


def cpu_seconds() -> float:
    """CPU time of this process so far (all threads: event loop, journal reads, commits)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bare_producer(
    bootstrap: str,
    topic: str,
    count: int,
    totals: dict[str, float] | None = None,
    *,
    full_headers: bool = True,
) -> float:
    """The ceiling: aiokafka batch API, pre-encoded 1 KiB records, 4 batches in flight.

    ``full_headers``: the records carry exactly what the sink sends (every ``ce_*``
    header of binary mode, built once per key beforehand), so the two move the same
    bytes; otherwise only ``ce_id`` and ``ce_type`` (the ceiling this bench used first).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_batch_size=1024 * 1024,
        max_request_size=2 * 1024 * 1024,
        linger_ms=5,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        values = [event(n).data_bytes() for n in range(KEYS)]
        keys = [f"run-{k}".encode() for k in range(KEYS)]
        if full_headers:
            per_key = [build_record(event(n), topic).headers for n in range(KEYS)]
        else:
            two = [("ce_id", b"x" * 36), ("ce_type", b"arga.validation.step_result")]
            per_key = [two] * KEYS
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        pending: list[Any] = []
        builders = {p: producer.create_batch() for p in partitions}
        for n in range(count):
            k = n % KEYS
            p = partitions[(murmur2(keys[k]) & 0x7FFFFFFF) % len(partitions)]
            b = builders[p]
            headers = per_key[k]
            if b.append(key=keys[k], value=values[k], timestamp=None, headers=headers) is None:
                pending.append(await producer.send_batch(b, topic, partition=p))
                if len(pending) > 4:
                    await pending.pop(0)
                b = builders[p] = producer.create_batch()
                b.append(key=keys[k], value=values[k], timestamp=None, headers=headers)
        for p, b in builders.items():
            if b.record_count():
                pending.append(await producer.send_batch(b, topic, partition=p))
        for f in pending:
            await f
        elapsed = time.perf_counter() - start
        if totals is not None:
            totals["cpu_bare"] = totals.get("cpu_bare", 0.0) + cpu_seconds() - cpu0
        return count / elapsed
    finally:
        await producer.stop()


def bare_librdkafka(
    bootstrap: str, topic: str, count: int, totals: dict[str, float] | None = None
) -> float:
    """A bare librdkafka producer (confluent-kafka): the same records, acks=all,
    idempotence on, 1 MiB batches, linger 5 ms; ``produce`` then ``flush`` (blocking: run
    it in a thread)."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.size": 1024 * 1024,
            "message.max.bytes": 2 * 1024 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1024 * 1024,
        }
    )
    values = [event(n).data_bytes() for n in range(KEYS)]
    keys = [f"run-{k}".encode() for k in range(KEYS)]
    per_key: list[list[tuple[str, str | bytes | None]]] = [
        list(build_record(event(n), topic).headers) for n in range(KEYS)
    ]
    producer.list_topics(topic, timeout=10)
    failed: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    cpu0 = cpu_seconds()
    start = time.perf_counter()
    for n in range(count):
        k = n % KEYS
        while True:
            try:
                producer.produce(
                    topic, value=values[k], key=keys[k], headers=per_key[k], on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.001)
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"librdkafka: {len(failed)} records failed: {failed[0]}")
    if totals is not None:
        totals["cpu_rdkafka"] = totals.get("cpu_rdkafka", 0.0) + cpu_seconds() - cpu0
    return count / elapsed


def sink_settings(state: Path, sinks: dict[str, Any]) -> Settings:
    return load_settings(None, state_dir=str(state), http={"enabled": False}, sinks=sinks)


async def fill(journal: Journal, count: int, start: int = 0) -> None:
    for lo in range(start, start + count, 2000):
        await journal.append_many([event(n) for n in range(lo, min(start + count, lo + 2000))])


@contextlib.asynccontextmanager
async def worker_for(
    s: Settings, name: str, journal: Journal, sink: Any, metrics: Metrics
) -> AsyncIterator[SinkWorker]:
    cfg = s.sinks[name]
    worker = SinkWorker(
        sink,
        SinkContext(name, journal, metrics),
        EventRouter.from_settings(s),  # the daemon's router, [ops] routes included
        batch_size=cfg.batch_size,
        backoff=Backoff(base=0.01, cap=0.1),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        yield worker
        worker.stop()
        tg.cancel_scope.cancel()


async def drain(journal: Journal, name: str) -> None:
    # Polling keeps the worker code untouched. Every 5 ms: at most 5 ms late on a run of
    # seconds (0.1 %), while a 1 ms poll took ~3 % of the process's CPU (py-spy).
    while journal.cursor(name) < journal.last_seq:  # noqa: ASYNC110
        await anyio.sleep(0.005)


def timed(target: Any, name: str, totals: dict[str, float]) -> None:
    """Wrap ``target.name`` (a coroutine method) to add its wall time to ``totals``."""
    inner = getattr(target, name)

    async def wrapper(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await inner(*args, **kw)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0

    setattr(target, name, wrapper)


def timed_confirm(sink: KafkaSink, totals: dict[str, float]) -> None:
    """Time the second half of each ``submit`` (waiting for the broker's acks)."""
    inner = sink.submit

    async def submit(batch: Sequence[Delivery]) -> Any:
        confirmed = await inner(batch)

        async def timed_confirmed() -> None:
            t0 = time.perf_counter()
            try:
                await confirmed()
            finally:
                totals["confirm"] = totals.get("confirm", 0.0) + time.perf_counter() - t0

        return timed_confirmed

    sink.submit = submit  # type: ignore[method-assign]


async def journal_to_kafka(
    bootstrap: str, topic: str, count: int, batch: int, totals: dict[str, float] | None = None
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        s = sink_settings(
            Path(tmp),
            {
                "k": {
                    "type": "kafka",
                    "bootstrap_servers": bootstrap,
                    "topic": topic,
                    "batch_size": batch,
                    "max_batch_bytes": "1MiB",
                }
            },
        )
        metrics = Metrics()
        async with Journal(Path(tmp) / "j.db", sinks=["k"], max_backlog_events=10**7) as journal:
            await fill(journal, count)
            sink = KafkaSink(s.sinks["k"], SinkContext("k", journal, metrics), s)  # type: ignore[arg-type]
            if totals is not None:
                timed(journal, "read", totals)
                timed(journal, "read_after", totals)
                timed(journal, "ack", totals)
                timed(sink, "submit", totals)
                timed_confirm(sink, totals)
            cpu0, loop0 = cpu_seconds(), time.thread_time()
            start = time.perf_counter()
            async with worker_for(s, "k", journal, sink, metrics):
                await drain(journal, "k")
            elapsed = time.perf_counter() - start
            if totals is not None:
                totals["cpu_ours"] = totals.get("cpu_ours", 0.0) + cpu_seconds() - cpu0
                # This thread runs the event loop; the rest is LevelDB's (the read and
                # commit threads, and its compaction of the events just journaled).
                totals["cpu_loop"] = totals.get("cpu_loop", 0.0) + time.thread_time() - loop0
            await sink.aclose()
        return count / elapsed


async def journal_to_webhook(count: int, concurrency: int) -> float:
    router = Router()

    async def ok(request: Request) -> Response:
        await request.body()
        return Response(204, content_type=None)

    router.add("POST", "/hook", ok)
    async with serve(router, http="httptools") as base:
        with tempfile.TemporaryDirectory() as tmp:
            s = sink_settings(
                Path(tmp),
                {
                    "w": {
                        "type": "webhook",
                        "url": base + "/hook",
                        "secrets": ["whsec_" + "QkVOQ0hCRU5DSEJFTkNIQkVOQ0hCRU5DSEJFTkNI"],
                        "allow_private": True,
                        "concurrency": concurrency,
                        "batch_size": 500,
                    }
                },
            )
            metrics = Metrics()
            async with Journal(Path(tmp) / "j.db", sinks=["w"]) as journal:
                await fill(journal, count)
                sink = WebhookSink(s.sinks["w"], SinkContext("w", journal, metrics), s)  # type: ignore[arg-type]
                start = time.perf_counter()
                async with worker_for(s, "w", journal, sink, metrics):
                    await drain(journal, "w")
                elapsed = time.perf_counter() - start
                await sink.aclose()
                assert await journal.count_retries("w") == 0
    return count / elapsed


async def latency(bootstrap: str, topic: str, rate: int, seconds: float) -> list[float]:
    committed: dict[str, float] = {}
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        s = sink_settings(
            Path(tmp), {"k": {"type": "kafka", "bootstrap_servers": bootstrap, "topic": topic}}
        )
        metrics = Metrics()
        async with Journal(Path(tmp) / "j.db", sinks=["k"]) as journal:
            sink = KafkaSink(s.sinks["k"], SinkContext("k", journal, metrics), s)  # type: ignore[arg-type]
            real_submit = sink.submit

            async def timed_submit(batch: Sequence[Delivery]) -> Any:
                confirmed = await real_submit(batch)

                async def timed_confirmed() -> None:
                    await confirmed()  # every record of the batch acked by the broker
                    now = time.perf_counter()
                    for d in batch:
                        t0 = committed.pop(d.event.id, None)
                        if t0 is not None:
                            samples.append((t0, now - t0))

                return timed_confirmed

            sink.submit = timed_submit  # type: ignore[method-assign]
            async with worker_for(s, "k", journal, sink, metrics) as worker:
                while not worker.started:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                tick = 0.005
                per_tick = max(1, int(rate * tick))
                begin = time.perf_counter()
                n = 0
                while (now := time.perf_counter()) - begin < seconds:
                    target = begin + (n / rate)
                    if target > now:
                        await anyio.sleep(target - now)

                    async def one_tick(first: int) -> None:
                        batch = [event(10**7 + i) for i in range(first, first + per_tick)]
                        await journal.append_many(batch)
                        t = time.perf_counter()
                        for e in batch:
                            committed[e.id] = t

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(one_tick, n)
                    n += per_tick
                await drain(journal, "k")
            await sink.aclose()
        cutoff = min(t for t, _ in samples) + 2.0
        return [lat for t, lat in samples if t >= cutoff]


async def bare_latency(bootstrap: str, topic: str, rate: int, seconds: float) -> list[float]:
    """The latency ceiling: a bare idempotent aiokafka producer (acks=all) sending the
    same records at the same rate, ``send()`` → ack per record (no journal)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    samples: list[tuple[float, float]] = []
    try:
        values = [event(n).data_bytes() for n in range(KEYS)]
        keys = [f"run-{k}".encode() for k in range(KEYS)]
        headers = [build_record(event(n), topic).headers for n in range(KEYS)]
        tick = 0.005
        per_tick = max(1, int(rate * tick))
        begin = time.perf_counter()
        n = 0
        pending: list[Any] = []
        while (now := time.perf_counter()) - begin < seconds:
            target = begin + (n / rate)
            if target > now:
                await anyio.sleep(target - now)
            t0 = time.perf_counter()
            for i in range(n, n + per_tick):
                k = i % KEYS
                fut = await producer.send(topic, values[k], keys[k], headers=headers[k])
                fut.add_done_callback(
                    lambda _f, t0=t0: samples.append((t0, time.perf_counter() - t0))
                )
                pending.append(fut)
            n += per_tick
        for fut in pending:
            await fut
    finally:
        await producer.stop()
    cutoff = min(t for t, _ in samples) + 2.0
    return [lat for t, lat in samples if t >= cutoff]


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", "json")  # no per-batch debug lines on the terminal
    print("== bench_sinks", flush=True)
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, pid {os.getpid()}, uvloop={args.uvloop}")
    print(f"   {as_the_daemon()}")
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as root:
        # On this (the main) thread: the JVM dies with the thread that started it.
        kafka = start_kafka(Path(root), nodes=1, jvm=PRODUCTION_JVM)
        try:
            print(
                f"   Apache Kafka {kafka.version}, 1 broker, started in "
                f"{kafka.startup_seconds:.1f} s, JVM {' '.join(PRODUCTION_JVM)}"
            )
            await measure(args, kafka)
        finally:
            kafka.stop()


async def measure(args: argparse.Namespace, kafka: KafkaCluster) -> None:
    if not args.latency_only:
        await throughput(args, kafka)
    lat = await latency(
        kafka.bootstrap, await fresh_topic(kafka, "latency"), args.rate, args.seconds
    )
    bare = await bare_latency(
        kafka.bootstrap, await fresh_topic(kafka, "latency-bare"), args.rate, args.seconds
    )
    print(f"-- journal commit → Kafka ack at {args.rate:,}/s for {args.seconds:.0f}s")
    print("   (first 2 s dropped); beside it, a bare producer's send → ack in the same run")
    row("samples", f"{len(lat):,}")
    for p in (50, 99, 99.9):
        row(
            f"p{p}",
            f"{1000 * percentile(lat, p):.2f} ms",
            ("target p99 < 25 ms; " if p == 99 else "")
            + f"bare producer {1000 * percentile(bare, p):.2f} ms",
        )
    row("max", f"{1000 * max(lat):.2f} ms", f"bare producer {1000 * max(bare):.2f} ms")
    row("peak RSS of this process", f"{peak_rss_mib():.0f} MiB")
    print(f"   load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


async def throughput(args: argparse.Namespace, kafka: KafkaCluster) -> None:
    count = args.events
    bare, rdkafka, ours = [], [], []
    totals: dict[str, float] = {}
    bootstrap = kafka.bootstrap
    # Warm the broker's JVM up (JIT, page cache) before anything is measured.
    await bare_producer(bootstrap, await fresh_topic(kafka, "warm-up"), min(count, 50_000))
    for i in range(args.runs):
        topic = await fresh_topic(kafka, "bare")
        bare.append(await bare_producer(bootstrap, topic, count, totals))
        topic = await fresh_topic(kafka, "rdkafka")
        rdkafka.append(
            await anyio.to_thread.run_sync(bare_librdkafka, bootstrap, topic, count, totals)
        )
        topic = await fresh_topic(kafka, "sink")
        ours.append(await journal_to_kafka(bootstrap, topic, count, args.batch, totals))
        row(f"run {i + 1}: bare aiokafka create_batch/send_batch", f"{bare[-1]:,.0f} ev/s")
        row(f"run {i + 1}: bare librdkafka (confluent-kafka)", f"{rdkafka[-1]:,.0f} ev/s")
        row(f"run {i + 1}: journal → KafkaSink (batch {args.batch})", f"{ours[-1]:,.0f} ev/s")
    b, r, o = statistics.median(bare), statistics.median(rdkafka), statistics.median(ours)
    print(
        f"-- Apache Kafka, {count:,} events of 1 KiB, acks=all, idempotence on, "
        f"4 partitions, {KEYS} keys"
    )
    print(f"   median of {args.runs} run(s), a fresh topic for each")
    row("bare aiokafka batch producer (ceiling, same run)", f"{b:,.0f} ev/s")
    row("bare librdkafka producer (same run)", f"{r:,.0f} ev/s")
    row("journal → KafkaSink", f"{o:,.0f} ev/s", f"{100 * o / b:.0f}% of ceiling (target ≥ 60%)")
    n_all = count * args.runs
    for part, label in (
        ("cpu_bare", "CPU of this process: bare aiokafka producer"),
        ("cpu_rdkafka", "CPU of this process: bare librdkafka (its threads)"),
        ("cpu_ours", "CPU of this process: journal → KafkaSink"),
        ("cpu_loop", "  of which the event loop's thread"),
    ):
        row(f"  {label}", f"{1e6 * totals.get(part, 0) / n_all:.1f} µs/ev")
    print("   wall time per event in each stage (the worker overlaps them: not additive)")
    for part, label in (
        ("read", "journal.read (first batch of a pipeline run)"),
        ("read_after", "journal.read_after (prefetch, LevelDB in a thread)"),
        ("submit", "KafkaSink.submit (records, send_batch)"),
        ("confirm", "waiting for broker acks (confirmed())"),
        ("ack", "journal.ack (group commit, fsync)"),
    ):
        row(f"  time in {label}", f"{1e6 * totals.get(part, 0) / n_all:.1f} µs/ev")

    for conc in (8, 32):
        rate = await journal_to_webhook(args.webhook_events, conc)
        row(f"journal → WebhookSink → local receiver (concurrency {conc})", f"{rate:,.0f} ev/s")


async def fresh_topic(kafka: KafkaCluster, name: str) -> str:
    """A new 4-partition topic (the broker does not create topics on demand)."""
    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    await anyio.to_thread.run_sync(lambda: kafka.create_topic(topic, partitions=4, replication=1))
    return topic


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000, help="sink batch_size (journal read)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--webhook-events", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("--latency-only", action="store_true", help="only the commit → ack latency")
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    if a.quick:
        a.events, a.runs, a.webhook_events, a.seconds = 20_000, 1, 500, 4.0
    anyio.run(main, a, backend="asyncio", backend_options={"use_uvloop": a.uvloop})
