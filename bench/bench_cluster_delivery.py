"""Cluster-mode delivery: the dedupe window's rebuild time on assignment, and one
instance's outbound-webhook delivery rate from the events topic.

Run from the repository root: ``.venv/bin/python -m bench.bench_cluster_delivery``
(``--quick``: a short smoke run; ``ARGBRIDGE_KAFKA_CACHE`` reuses fetched Kafka jars).

One Apache Kafka node (the newest 4.x, from the tests' fixtures) on free loopback ports.
Events (~1 KiB of data, 64 subjects) are written to an events topic of 12 partitions with
the Kafka sink's codec, as the events producer writes them.

- Rebuild: the delivery group's offsets are committed at the end of the topic (as if an
  earlier owner delivered everything), then one delivery consumer (a webhook sink) joins:
  every partition is newly assigned, so it re-reads the whole window
  (``offsets_for_times(now - 1 h)`` up to the committed offsets). Figure: the consumer's
  own measure (``Rebuild.seconds``, what ``delivery.dedupe_rebuilt`` logs), for window
  sizes of ``--sizes`` ids.
- Delivery: ``--deliver`` new events after that, signed and delivered to a local receiver
  answering 204 (the one bench_sinks' journal → webhook figure uses): the time from the
  first to the last arrival, in events/s (receiver and consumer share this process and
  the machine's 2 cores with the broker). Compare with bench_sinks' ``--webhook-events``
  figure run at the same time: the journal-fed sink on the same receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from tests.conftest import make_event, settings
from tests.support.apache_kafka import start_kafka
from tests.support.cluster_delivery import DeliveryHarness
from tests.support.receivers import serve

from argbridge.delivery.kafka_records import build_record
from argbridge.events import deterministic_id
from argbridge.http.asgi import Request, Response, Router
from bench.common import header, row

SECRET = "whsec_" + base64.b64encode(b"bench-cluster-delivery-secret-01").decode()
PARTITIONS = 12


async def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        pending = []
        for n in range(start, start + count):
            subject = f"run-{n % 64}"
            ev = make_event(n, size=900, subject=subject, id=deterministic_id("bench", n))
            rec = build_record(ev, topic)
            pending.append(
                await producer.send(topic, rec.value, key=subject.encode(), headers=rec.headers)
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def commit_all(bootstrap: str, group: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(ends[tp], "") for tp in tps})
    finally:
        await consumer.stop()


class Counter:
    """A plain 204 receiver (as bench_sinks' journal → webhook figure uses), counting."""

    def __init__(self) -> None:
        self.n = 0
        self.arrived = anyio.Event()
        self.router = Router()
        self.router.add("POST", "/hook", self.hook)

    async def hook(self, request: Request) -> Response:
        await request.body()
        self.n += 1
        self.arrived.set()
        self.arrived = anyio.Event()
        return Response(204, content_type=None)

    async def wait_for(self, n: int) -> None:
        while self.n < n:
            await self.arrived.wait()


async def one_size(root: Path, bootstrap: str, size: int, deliver: int) -> None:
    receiver = Counter()
    async with serve(receiver.router, http="httptools") as base:
        s = settings(
            root,
            sinks={
                "hook": {
                    "type": "webhook",
                    "url": base + "/hook",
                    "secrets": [SECRET],
                    "allow_private": True,
                }
            },
        )
        async with DeliveryHarness(bootstrap, root, s, partitions=PARTITIONS) as h:
            topic = h.cluster.events_topic_name
            await produce(bootstrap, topic, 0, size)
            await commit_all(bootstrap, h.cluster.group_id("delivery.hook"), topic)
            async with h.instance("hook", within=600) as inst:
                rebuilt = inst.consumer.rebalanced
                await rebuilt.wait()
                r = inst.consumer.last_rebuild
                assert r is not None
                row(
                    f"rebuild, window of {size:,} ids",
                    f"{r.seconds:.3f} s",
                    f"{r.ids:,} ids from {r.records:,} records on {r.partitions} partitions; "
                    f"{r.ids / max(r.seconds, 1e-9):,.0f} ids/s",
                )
                if deliver:
                    await produce(bootstrap, topic, size, deliver)
                    await receiver.wait_for(1)
                    began = time.perf_counter()
                    await receiver.wait_for(deliver)
                    elapsed = time.perf_counter() - began
                    row(
                        f"delivery to a webhook receiver, {deliver:,} events",
                        f"{deliver / elapsed:,.0f} events/s",
                        "one instance, concurrency 8 (the sink's default)",
                    )


async def main(args: argparse.Namespace) -> None:
    header("bench_cluster_delivery: dedupe-window rebuild and webhook delivery from Kafka")
    sizes = [2_000] if args.quick else args.sizes
    deliver = 500 if args.quick else args.deliver
    with tempfile.TemporaryDirectory(prefix="bench-cluster-delivery-") as tmp:
        root = Path(tmp)
        kafka = start_kafka(root / "kafka")
        try:
            print(
                f"   Apache Kafka {kafka.version}, 1 node, started in {kafka.startup_seconds:.1f} s"
            )
            for i, size in enumerate(sizes):
                sub = root / f"run-{i}-{uuid.uuid4().hex[:6]}"
                sub.mkdir()
                await one_size(sub, kafka.bootstrap, size, deliver if i == 0 else 0)
        finally:
            kafka.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--deliver", type=int, default=5_000)
    anyio.run(main, parser.parse_args())
