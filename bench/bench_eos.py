"""Exactly-once vs at-least-once into Apache Kafka, in one run.

Run from the repository root: ``.venv/bin/python -m bench.bench_eos`` (``--quick``: a
short smoke run; ``ARGBRIDGE_KAFKA_CACHE`` reuses fetched Kafka jars).

One Apache Kafka node (the newest 4.x, KRaft, from the tests' fixtures) on free loopback
ports; the journal in a temp dir (SQLite WAL, FULL sync); this process set up as the
daemon sets itself up (:func:`bench.common.as_the_daemon`).

1. **Throughput**, 1 KiB events, ``acks=all``, a topic with 4 partitions and 64 keys:
   the events pre-journaled, then a :class:`SinkWorker` drains them through the Kafka
   sink with ``delivery = "at-least-once"`` (idempotent producer, pipelined) and with
   ``delivery = "exactly-once"`` (one transaction per journal batch, with the progress
   record), alternately, ``--rounds`` times each; medians. Target: exactly-once ≥ 70 %
   of at-least-once.
2. **Latency**, exactly-once at 2,000 events/s for ``--seconds``: for each event, from
   the moment its append to the journal committed to the moment a ``read_committed``
   librdkafka consumer (in a thread of this process, ``fetch.wait.max.ms`` at its
   default) received it; first second dropped. Target p99 < 100 ms with the default
   transaction batching: one transaction per journal batch the worker reads (up to the
   exactly-once default ``batch_size`` = 2,000 events and ``batch_bytes``, no linger:
   whatever was journaled while the previous transaction committed). Each mode runs at
   its own default ``batch_size`` (at-least-once 500, exactly-once 2,000); exactly-once at
   500 is printed for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from tests.support.apache_kafka import KafkaCluster, start_kafka

from argbridge.backoff import Backoff
from argbridge.config.settings import Settings, load_settings
from argbridge.config.sinks import EXACTLY_ONCE_BATCH_SIZE
from argbridge.events import CloudEvent, deterministic_id
from argbridge.journal import Journal
from argbridge.logging import configure_logging
from argbridge.metrics import Metrics
from argbridge.router import Router
from argbridge.sinks.base import SinkContext, SinkWorker
from argbridge.sinks.kafka_txn import build_kafka_sink
from bench.common import as_the_daemon, header, median, percentile, row

PAD = "x" * 900  # ≈ 1 KiB of data per event once serialised
KEYS = 64


def event(n: int, tag: str) -> CloudEvent:
    run = f"run-{n % KEYS}"
    return CloudEvent(
        id=deterministic_id("bench-eos", tag, n),
        source="urn:bench",
        type="arga.validation.step_result",
        subject=run,
        data={"n": n, "pad": PAD},
        partitionkey=run,
    )


def settings(
    state: Path, kafka: KafkaCluster, topic: str, delivery: str, batch_size: int | None = None
) -> Settings:
    sink: dict[str, object] = {
        "type": "kafka",
        "bootstrap_servers": kafka.bootstrap,
        "topic": topic,
        "delivery": delivery,
        "progress_topic": "bench.progress",
        "instance_id": f"bench-{uuid.uuid4().hex[:6]}",
        "max_batch_bytes": "1MiB",
    }
    if batch_size is not None:  # else the sink's default for its delivery mode
        sink["batch_size"] = batch_size
    return load_settings(None, state_dir=str(state), http={"enabled": False}, sinks={"k": sink})


@contextlib.asynccontextmanager
async def running(s: Settings, journal: Journal) -> AsyncIterator[Any]:
    cfg = s.sinks["k"]
    ctx = SinkContext("k", journal, Metrics())
    sink = build_kafka_sink(cfg, ctx, s)  # type: ignore[arg-type]
    worker = SinkWorker(
        sink,
        ctx,
        Router(s.routes, list(s.sinks)),
        batch_size=cfg.batch_size,
        backoff=Backoff(base=0.01, cap=0.1),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(60):
            while not worker.started:  # noqa: ASYNC110 - a benchmark, not a test
                await anyio.sleep(0.005)
        yield sink
        worker.stop()
        tg.cancel_scope.cancel()
    await sink.aclose()


async def throughput(
    kafka: KafkaCluster, delivery: str, count: int, batch_size: int | None = None
) -> float:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=4, replication=1)
    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        s = settings(Path(tmp), kafka, topic, delivery, batch_size)
        async with Journal(Path(tmp) / "j.db", sinks=["k"], max_backlog_events=10**7) as journal:
            for lo in range(0, count, 2000):
                await journal.append_many([event(n, tag) for n in range(lo, min(count, lo + 2000))])
            async with running(s, journal):
                # Timed from the sink's start-up done (connect, fence, progress read):
                # the drain, not the connection set-up.
                start = time.perf_counter()
                while journal.cursor("k") < journal.last_seq:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
                return count / (time.perf_counter() - start)


async def latency(
    kafka: KafkaCluster, rate: int, seconds: float, fetch_wait_ms: int | None = None
) -> tuple[list[float], int]:
    """Commit → visible-to-read_committed latencies (ms), and the transactions made."""
    from confluent_kafka import Consumer, TopicPartition

    topic = f"bench-lat-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=4, replication=1)
    tag = uuid.uuid4().hex
    committed_at: dict[str, float] = {}
    received: list[tuple[str, float]] = []
    stop = threading.Event()
    assigned = threading.Event()

    def consume() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "group.id": f"bench-{tag}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                **({} if fetch_wait_ms is None else {"fetch.wait.max.ms": fetch_wait_ms}),
            }
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
        assigned.set()
        try:
            while not stop.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error() is not None:
                    continue
                now = time.time()
                headers = dict(msg.headers() or [])
                ce_id = headers["ce_id"]
                received.append((ce_id.decode() if isinstance(ce_id, bytes) else str(ce_id), now))
        finally:
            consumer.close()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assigned.wait(30)
    per_tick, tick = rate // 100, 0.01
    with tempfile.TemporaryDirectory() as tmp:
        s = settings(Path(tmp), kafka, topic, "exactly-once")
        async with Journal(Path(tmp) / "j.db", sinks=["k"]) as journal:
            async with running(s, journal) as sink:
                start = time.perf_counter()
                n = 0
                async with anyio.create_task_group() as tg:

                    async def one_tick(first: int) -> None:
                        batch = [event(i, tag) for i in range(first, first + per_tick)]
                        await journal.append_many(batch)
                        now = time.time()
                        for e in batch:
                            committed_at[e.id] = now

                    while time.perf_counter() - start < seconds:
                        tg.start_soon(one_tick, n)
                        n += per_tick
                        next_at = start + (n // per_tick) * tick
                        await anyio.sleep(max(0.0, next_at - time.perf_counter()))
                with anyio.fail_after(60):
                    while len(received) < n:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                transactions = sink.commits
    stop.set()
    await anyio.to_thread.run_sync(thread.join)
    first = min(committed_at.values())
    return [
        (at - committed_at[i]) * 1000 for i, at in received if committed_at[i] > first + 1.0
    ], transactions


async def main(args: argparse.Namespace) -> None:
    configure_logging(level="warning", fmt="console")
    header("bench_eos: exactly-once vs at-least-once into Apache Kafka")
    print("   " + as_the_daemon())
    count = 5_000 if args.quick else args.events
    rounds = 1 if args.quick else args.rounds
    seconds = 3.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="bench-eos-kafka-") as root:
        kafka = start_kafka(Path(root))
        try:
            print(
                f"   Apache Kafka {kafka.version}, 1 node, started in {kafka.startup_seconds:.1f} s"
            )
            alo: list[float] = []
            eos: list[float] = []
            await throughput(kafka, "exactly-once", 2000)  # warm-up (progress topic, JIT)
            for _ in range(rounds):
                alo.append(await throughput(kafka, "at-least-once", count))
                eos.append(await throughput(kafka, "exactly-once", count))
            a, e = median(alo), median(eos)
            row(
                "at-least-once, 1 KiB, acks=all",
                f"{a:,.0f} ev/s",
                f"median of {rounds}: {', '.join(f'{v:,.0f}' for v in alo)}",
            )
            row(
                "exactly-once, 1 KiB, acks=all",
                f"{e:,.0f} ev/s",
                f"median of {rounds}: {', '.join(f'{v:,.0f}' for v in eos)}",
            )
            row(
                "exactly-once / at-least-once",
                f"{e / a:.0%}",
                f"each at its default batch_size ({EXACTLY_ONCE_BATCH_SIZE:,} / 500);"
                " target >= 70%",
            )
            small = median(
                [await throughput(kafka, "exactly-once", count, 500) for _ in range(rounds)]
            )
            row(
                "exactly-once, batch_size = 500 (for comparison)",
                f"{small:,.0f} ev/s",
                f"{small / a:.0%} of at-least-once",
            )
            for wait in (None, 10):
                lat, txns = await latency(kafka, 2000, seconds, wait)
                row(
                    "commit -> read_committed visible, 2,000 ev/s, consumer "
                    + ("defaults" if wait is None else f"fetch.wait.max.ms={wait}"),
                    f"p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms",
                    f"max {max(lat):.1f} ms over {len(lat)} events, {txns} transactions "
                    f"(~{2000 * seconds / max(txns, 1):.0f} events each); target p99 < 100 ms",
                )
        finally:
            kafka.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
