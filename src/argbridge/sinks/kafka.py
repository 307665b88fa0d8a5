"""The ``kafka`` sink: CloudEvents to Kafka topics through aiokafka's batch API.

``deliver`` turns each event into a record (:mod:`argbridge.delivery.kafka_records`:
binary mode by default, key = ``partitionkey``, topic from the route's override or the
sink's template), picks the partition with the default partitioner on the key (so a
run's events share a partition and keep their order), fills one ``BatchBuilder`` per
partition (``create_batch``/``send_batch``, several when a batch fills up), keeps at most
``max_in_flight`` batches awaiting their ack, and returns only when the broker acked
every batch (``acks=all`` by default). Only then does the worker move the cursor.

Every aiokafka call is bounded (``call_timeout``): the idempotent producer can hang
forever (aiokafka #1101) and a frozen broker accepts connections but never answers. On
any failure the producer is stopped (bounded) and dropped; the worker retries the batch
with backoff and the next ``deliver`` connects again, while the journal absorbs the
backlog — nothing is lost, at worst a batch is sent twice (consumers dedupe on
``ce_id``). A record over ``max_record_bytes`` is dead-lettered alone (never retried).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_records import (
    KafkaRecord,
    build_record,
    partition_for,
    render_topic,
)
from argbridge.errors import EventError, SinkError
from argbridge.sinks.base import Delivery, Health, SinkContext
from argbridge.sinks.requeue import RequeueRunner, refresh_dead_letter_gauge

#: Bound on stopping a producer (it flushes; with a dead broker that never ends).
CLOSE_TIMEOUT = 5.0


class KafkaSink:
    """Produces CloudEvents to Kafka; one producer, reconnecting on failure."""

    reports_sent = True

    def __init__(self, config: KafkaSinkConfig, ctx: SinkContext, settings: Settings) -> None:
        self.name = ctx.name
        self.config = config
        self.ctx = ctx
        self.producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._state = "not started"
        self._ok = False
        self.requeue = RequeueRunner(ctx, settings, self.deliver)

    def _new_producer(self) -> AIOKafkaProducer:
        c = self.config
        servers = c.bootstrap_servers
        return AIOKafkaProducer(
            bootstrap_servers=servers if isinstance(servers, str) else list(servers),
            client_id=c.client_id,
            acks=c.acks if c.acks == "all" else int(c.acks),
            compression_type=None if c.compression == "none" else c.compression,
            enable_idempotence=c.enable_idempotence,
            request_timeout_ms=int(c.request_timeout * 1000),
            linger_ms=int(c.linger * 1000),
            max_batch_size=c.max_batch_bytes,
            max_request_size=max(c.max_batch_bytes, c.max_record_bytes) + 64 * 1024,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        await refresh_dead_letter_gauge(self.ctx)

    async def _connect(self) -> None:
        try:
            producer = self._new_producer()
        except (ValueError, KafkaError) as exc:  # settings aiokafka refuses
            self._fail(exc, "configure")
            raise SinkError(f"kafka: cannot create the producer: {_describe(exc)}") from exc
        try:
            with anyio.fail_after(self.config.call_timeout):
                await producer.start()
        except (Exception, TimeoutError) as exc:
            await self._stop(producer)
            self._fail(exc, "connect")
            raise SinkError(
                f"kafka: cannot connect to {self._servers()}: {_describe(exc)}"
            ) from exc
        self.producer = producer
        self._partitions.clear()
        self._ok = True
        self._state = f"connected to {self._servers()}"
        self.ctx.log.info("kafka.connected", servers=self._servers())

    async def aclose(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await self._stop(producer)
        self._state = "closed"
        self._ok = False

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        with anyio.move_on_after(min(CLOSE_TIMEOUT, self.config.call_timeout), shield=True):
            try:
                await producer.stop()
            except Exception as exc:
                self.ctx.log.debug("kafka.stop_failed", error=exc)

    def health(self) -> Health:
        return Health(self._ok and self.producer is not None, self._state)

    async def background(self) -> None:
        """Redeliver requeued dead letters."""
        await self.requeue.run()

    def wake(self) -> None:
        self.requeue.waker.wake()

    # -- delivery ------------------------------------------------------------------------

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        if self.producer is None:
            await self._connect()
        producer = self.producer
        assert producer is not None
        try:
            with anyio.fail_after(self.config.call_timeout):
                sent = await self._send(producer, batch)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._fail(exc, "produce")
            self.producer = None
            await self._stop(producer)
            raise SinkError(f"kafka: produce failed: {_describe(exc)}") from exc
        self._ok = True
        self._state = f"connected to {self._servers()}"
        self.ctx.count_sent([d.record for d in sent])

    async def _send(self, producer: AIOKafkaProducer, batch: Sequence[Delivery]) -> list[Delivery]:
        """Build and submit batches as records are made (the broker works meanwhile);
        return the deliveries sent once every batch is acked."""
        mode, default_topic = self.config.mode, self.config.topic
        builders: dict[tuple[str, int], Any] = {}
        pending: deque[Any] = deque()
        sent: list[Delivery] = []

        async def submit(slot: tuple[str, int], builder: Any) -> None:
            pending.append(await producer.send_batch(builder, slot[0], partition=slot[1]))
            while len(pending) > self.config.max_in_flight:
                await pending.popleft()

        try:
            for d in batch:
                try:
                    topic = render_topic(d.route.topic or default_topic, d.event)
                except EventError as exc:
                    await self._dead_letter(d, str(exc))
                    continue
                record = build_record(d.event, topic, mode)
                if record.size > self.config.max_record_bytes:
                    reason = f"record of {record.size} bytes > max_record_bytes"
                    await self._dead_letter(d, reason)
                    continue
                partitions = self._partitions.get(topic)
                if partitions is None:
                    partitions = sorted(await producer.partitions_for(topic))
                    if not partitions:
                        raise SinkError(f"kafka: topic {topic!r} has no partitions")
                    self._partitions[topic] = partitions
                slot = (topic, partition_for(record.key, partitions, d.event.id))
                builder = builders.get(slot)
                if builder is None:
                    builder = builders[slot] = producer.create_batch()
                ts = int(d.record.appended_at * 1000)
                if not _put(builder, record, ts):
                    await submit(slot, builder)
                    builder = builders[slot] = producer.create_batch()
                    if not _put(builder, record, ts):  # an empty batch takes any record
                        raise SinkError("kafka: a record does not fit an empty batch")
                sent.append(d)
            for slot, builder in builders.items():
                if builder.record_count():
                    await submit(slot, builder)
            while pending:
                try:
                    await pending.popleft()
                except MessageSizeTooLargeError as exc:
                    raise SinkError(f"kafka: broker refused a batch as too large: {exc}") from exc
        finally:
            # Futures left behind by a failure or timeout must not log "exception was never
            # retrieved" later: read their outcome whenever they settle.
            for fut in pending:
                fut.add_done_callback(_settle)
        return sent

    async def _dead_letter(self, d: Delivery, reason: str) -> None:
        await self.ctx.journal.dead_letter(self.name, d.record, reason, 1)
        self.ctx.metrics.errors.labels(self.name, "sink", "dead_letter").inc()
        self.ctx.log.warning("kafka.dead_letter", event_id=d.event.id, reason=reason)
        await refresh_dead_letter_gauge(self.ctx)

    def _fail(self, exc: BaseException, during: str) -> None:
        self._ok = False
        self._state = f"broker unavailable ({during}): {_describe(exc)}"

    def _servers(self) -> str:
        s = self.config.bootstrap_servers
        return s if isinstance(s, str) else ",".join(s)


def _put(builder: Any, record: KafkaRecord, ts: int) -> bool:
    """Append to a ``BatchBuilder``; ``False`` when it is full."""
    meta = builder.append(key=record.key, value=record.value, timestamp=ts, headers=record.headers)
    return meta is not None


def _settle(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
