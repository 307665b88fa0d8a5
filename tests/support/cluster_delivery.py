"""Delivery consumers under test (cluster mode's Slack/webhook sinks), in this process.

:class:`DeliveryHarness` holds one deployment on the session's Apache Kafka broker: its
events topic (made up front, as the events producer makes it), a producer writing events
with the Kafka sink's own codec (:func:`~argbridge.delivery.kafka_records.build_record`),
and :meth:`DeliveryHarness.instance`, which runs one :class:`DeliveryConsumer` over a
fresh journal (an "instance") until its block ends.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from argbridge.backoff import Backoff
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.cluster.delivery import DeliveryConsumer, build_delivery
from argbridge.config.cluster import ClusterConfig
from argbridge.config.settings import Settings
from argbridge.delivery.kafka_records import build_record
from argbridge.delivery.schedule import RetrySchedule
from argbridge.events import CloudEvent
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Router


@dataclass
class Instance:
    journal: Journal
    consumer: DeliveryConsumer
    metrics: Metrics

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class DeliveryHarness:
    bootstrap: str
    tmp_path: Path
    settings: Settings
    clock: Clock = SYSTEM_CLOCK
    partitions: int = 4
    cluster: ClusterConfig = field(init=False)
    _producer: AIOKafkaProducer | None = None
    _n: int = 0

    def __post_init__(self) -> None:
        self.cluster = ClusterConfig(
            enabled=True,
            bootstrap_servers=self.bootstrap,
            deployment=f"t{uuid.uuid4().hex[:8]}",
            events_partitions=self.partitions,
            replication_factor=1,
            session_timeout=6.0,
            heartbeat_interval=1.0,
            request_timeout=10.0,
            delivery_retry_schedule=[0.0, 5.0, 60.0],
        )

    async def __aenter__(self) -> DeliveryHarness:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(self.cluster.events_topic_name, self.partitions, 1)]
            )
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def produce(self, events: Sequence[CloudEvent]) -> None:
        """Write ``events`` to the events topic as the events producer does (keyed by
        subject, else id)."""
        assert self._producer is not None
        topic = self.cluster.events_topic_name
        for ev in events:
            rec = build_record(ev, topic)
            key = (ev.subject or ev.id).encode()
            await self._producer.send_and_wait(topic, rec.value, key=key, headers=rec.headers)

    async def committed(self, sink: str) -> dict[int, int]:
        """The delivery group's committed offsets on the events topic, per partition."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.cluster.group_id(f"delivery.{sink}"),
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            topic = self.cluster.events_topic_name
            out = {}
            for p in range(self.partitions):
                out[p] = await consumer.committed(TopicPartition(topic, p)) or 0
            return out
        finally:
            await consumer.stop()

    async def ends(self) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await consumer.start()
        try:
            topic = self.cluster.events_topic_name
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: int(ends[tp]) for tp in tps}
        finally:
            await consumer.stop()

    @contextlib.asynccontextmanager
    async def instance(self, sink: str, *, within: float = 60.0) -> AsyncIterator[Instance]:
        """One instance's delivery consumer for ``sink`` while the block runs."""
        self._n += 1
        cfg = self.settings.sinks[sink]
        metrics = Metrics()
        path = self.tmp_path / f"i{self._n}"
        path.mkdir()
        async with Journal(path / "j", sinks=list(self.settings.sinks), clock=self.clock) as j:
            built, consumer = build_delivery(
                sink,
                cfg,
                self.settings.model_copy(update={"cluster": self.cluster}),
                j.for_sink(),
                metrics,
                self.clock,
                Router.from_settings(self.settings),
                events_acked=None,
                instance_id=f"i{self._n}",
            )
            consumer.backoff = Backoff(base=0.05, cap=0.5)
            consumer.schedule = RetrySchedule(self.cluster.delivery_retry_schedule, 0.0)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(consumer.run)
                    try:
                        with anyio.fail_after(within):
                            yield Instance(j, consumer, metrics)
                    finally:
                        consumer.stop()
                        with anyio.move_on_after(15):
                            await consumer.done.wait()
                        tg.cancel_scope.cancel()
            finally:
                await built.aclose()
