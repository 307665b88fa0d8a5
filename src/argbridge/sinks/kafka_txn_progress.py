"""The exactly-once Kafka sink's progress topic, and the stable ids it is keyed by.

Owns :class:`ProgressTopic`: creating the topic when it is missing (one partition,
compacted, ``min.insync.replicas`` 2 where there are brokers for it) and reading back the
last committed progress record of one key, ``read_committed``, up to a bound: the high
watermark as it was after this incarnation's ``InitProducerId`` fenced the previous one
(no commit of the fenced producer can land after it), or, before that fence, the last
stable offset (a transaction of ours left open would hold the high watermark's records
back for good). Also :func:`stable_id`, the instance and journal ids made once and kept
in the journal's state store (the state dir). The records themselves are encoded and
reconciled in :mod:`argbridge.delivery.kafka_progress`, which is pure.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_progress import Position, decode_position
from argbridge.delivery.kafka_records import partition_for
from argbridge.errors import SinkError
from argbridge.sinks.kafka import CLOSE_TIMEOUT
from argbridge.sinks.kafka_client import (
    broker_count,
    client_kwargs,
    compacted_topic,
    create_topics,
)


class StateStore(Protocol):
    """The journal's small durable key/value store (in the state dir)."""

    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str) -> None: ...


async def stable_id(store: StateStore, key: str) -> str:
    """The id kept under ``key`` in the state store, made (a random UUID) on first use."""
    value = await store.get_state(key)
    if value is None:
        value = str(uuid.uuid4())
        await store.set_state(key, value)
    return value


class ProgressTopic:
    """The compacted topic holding one position record per instance and sink."""

    def __init__(
        self,
        config: KafkaSinkConfig,
        admin: Callable[[], Awaitable[AIOKafkaAdminClient]],
        log: Any,
    ) -> None:
        self.config = config
        self.name = config.progress_topic
        self._admin = admin
        self._log = log

    async def ensure(self) -> None:
        """Create the progress topic (one partition, compacted) when it is missing."""
        c = self.config
        admin = await self._admin()
        if self.name in await admin.list_topics():
            return
        replication = min(3, await broker_count(admin))
        topic = compacted_topic(self.name, 1, replication)
        failed = await create_topics(admin, [topic], c.request_timeout)
        if failed:
            raise SinkError(f"kafka: cannot create the progress topic: {failed[0]}")
        self._log.info("kafka.progress_topic_created", topic=self.name)

    async def read(self, key: bytes, *, stable_only: bool = False) -> tuple[Position | None, int]:
        """The last committed progress record under ``key`` (``read_committed``) and its
        offset (``-1`` when there is none), read up to the high watermark as it is now
        (after the fence), or with ``stable_only`` up to the last stable offset."""
        admin = await self._admin()
        while True:  # (a topic just created may not list its partitions yet)
            described = await admin.describe_topics([self.name])
            partitions = sorted(p["partition"] for t in described for p in t["partitions"])
            if partitions:
                break
            await anyio.sleep(0.05)
        tp = TopicPartition(self.name, partition_for(key, partitions, ""))
        consumer = _consumer(self.config, "read_committed")
        offset = -1
        try:
            await consumer.start()
            consumer.assign([tp])
            if stable_only:
                # Before our own InitProducerId: a transaction of ours left open would
                # hold the last stable offset back for good; read up to it.
                high = int((await consumer.end_offsets([tp]))[tp])
            else:
                high = await _high_watermark(self.config, tp)
            await consumer.seek_to_beginning(tp)
            found: bytes | None = None
            seen = False
            while await consumer.position(tp) < high:
                batch = await consumer.getmany(tp, timeout_ms=200)
                for msg in batch.get(tp, ()):
                    if msg.key == key:
                        found, seen = msg.value, True
                        offset = msg.offset
            return (decode_position(found) if seen else None), offset
        finally:
            await _close_consumer(consumer)


def _consumer(c: KafkaSinkConfig, isolation: str) -> AIOKafkaConsumer:
    """A group-less consumer for the progress topic (TLS/SASL as the sink's)."""
    return AIOKafkaConsumer(
        **{**client_kwargs(c), "client_id": f"{c.client_id}-progress"},
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
    )


async def _high_watermark(c: KafkaSinkConfig, tp: TopicPartition) -> int:
    """``tp``'s high watermark (a ``read_uncommitted`` ListOffsets)."""
    probe = _consumer(c, "read_uncommitted")
    try:
        await probe.start()
        ends = await probe.end_offsets([tp])
        return int(ends[tp])
    finally:
        await _close_consumer(probe)


async def _close_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer even when its caller was cancelled (bounded)."""
    with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
        with contextlib.suppress(Exception):
            await consumer.stop()
