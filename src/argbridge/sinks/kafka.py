"""The ``kafka`` sink: CloudEvents to Kafka topics through aiokafka's batch API.

``deliver`` turns each event into a record (:mod:`argbridge.delivery.kafka_records`:
binary mode by default, key = ``partitionkey``, topic from the route's override or the
sink's template), picks the partition with the default partitioner on the key (so a
run's events share a partition and keep their order), fills one ``BatchBuilder`` per
partition (``create_batch``/``send_batch``, several when a batch fills up), keeps at most
``max_in_flight`` batches awaiting their ack, and returns only when the broker acked
every batch (``acks=all`` by default). Only then does the worker move the cursor.

``deliver`` is ``submit`` (build and hand over) followed by its ``confirmed()`` (wait for
the acks): the :class:`~argbridge.sinks.base.SinkWorker` calls the two halves itself
when draining a backlog, building batch N+1 while the broker works on batch N. With the
default binary mode and a fixed topic, records are built straight from the event's
attributes and data as the journal stores them
(:func:`~argbridge.delivery.kafka_records.binary_parts`: no ``CloudEvent`` decode, no
re-encoding of ``data``), a
:class:`~argbridge.sinks.base.RouteBatch` is read without a ``Delivery`` per event, each
key's partition is remembered per topic, and the latency histogram is filled once per
batch.

Every aiokafka call is bounded (``call_timeout``): the idempotent producer can hang
forever (aiokafka #1101) and a frozen broker accepts connections but never answers. On
any failure the producer is stopped (bounded) and dropped; the worker retries the batch
with backoff and the next ``deliver`` connects again, while the journal absorbs the
backlog — nothing is lost, at worst a batch is sent twice (consumers dedupe on
``ce_id``). A record over ``max_record_bytes`` is dead-lettered alone (never retried).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import repeat
from typing import Any, NoReturn

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_records import (
    KafkaRecord,
    binary_parts,
    build_record,
    partition_for,
    render_topic,
)
from argbridge.errors import EventError, SinkError
from argbridge.journal import JournalRecord
from argbridge.router import Route
from argbridge.sinks.base import Delivery, Health, RouteBatch, SinkContext
from argbridge.sinks.requeue import RequeueRunner, refresh_dead_letter_gauge

#: Bound on stopping a producer (it flushes; with a dead broker that never ends).
CLOSE_TIMEOUT = 5.0
#: Keys whose partition is remembered per topic, and topics remembered (a templated
#: topic may name one per subject): when full, the cache starts over (issue 17: an entry
#: per distinct key forever was +4.2 MB per 17,850 keys). Active runs and incidents
#: are far fewer; a miss costs one bounded-LRU hash lookup.
MAX_CACHED_KEYS = 4096
MAX_CACHED_TOPICS = 256


class KafkaSink:
    """Produces CloudEvents to Kafka; one producer, reconnecting on failure."""

    reports_sent = True

    def __init__(self, config: KafkaSinkConfig, ctx: SinkContext, settings: Settings) -> None:
        self.name = ctx.name
        self.config = config
        self.ctx = ctx
        self.producer: AIOKafkaProducer | None = None
        #: Per topic: its sorted partitions, and the partition of each key seen (a run's
        #: events share a key: the partitioner's hash is worth remembering).
        self._topics: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        #: Ack futures of batches handed to the producer, oldest first (the in-flight
        #: bound spans submits: the worker submits the next batch before acks arrive).
        self._inflight: deque[Any] = deque()
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
        except BaseException:
            # Cancelled while connecting (the pipelined worker cancels a submit when an
            # earlier batch failed): do not leave a half-started producer behind.
            await self._stop(producer)
            raise
        self.producer = producer
        self._topics.clear()
        self._inflight.clear()
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
        confirmed = await self.submit(batch)
        await confirmed()

    async def submit(self, batch: Sequence[Delivery]) -> Callable[[], Awaitable[None]]:
        """The first half of :meth:`deliver`: build the records and hand every Kafka
        batch to the producer (at most ``max_in_flight`` awaiting their ack, counted
        across submits); return the second half, which waits until the broker acked
        all of them. The :class:`SinkWorker` builds the next journal batch meanwhile
        (the broker and this process then work at the same time) and acks the journal
        in submit order, each only after its own ``confirmed()`` returned."""
        if self.producer is None:
            await self._connect()
        producer = self.producer
        assert producer is not None
        futures: list[Any] = []
        try:
            with anyio.fail_after(self.config.call_timeout):
                sent = await self._send(producer, batch, futures)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._broken(producer, exc)

        async def confirmed() -> None:
            try:
                with anyio.fail_after(self.config.call_timeout):
                    for fut in futures:
                        await fut
            except MessageSizeTooLargeError as exc:
                raise SinkError(f"kafka: broker refused a batch as too large: {exc}") from exc
            except (KafkaError, OSError, TimeoutError) as exc:
                await self._broken(producer, exc)
            if producer is self.producer:
                self._ok = True
                self._state = f"connected to {self._servers()}"
            self.ctx.count_sent(sent)

        return confirmed

    async def _broken(self, producer: AIOKafkaProducer, exc: BaseException) -> NoReturn:
        """Drop a producer that failed (bounded stop) and raise the retryable error."""
        self._fail(exc, "produce")
        if self.producer is producer:
            self.producer = None
            self._inflight.clear()
        await self._stop(producer)
        raise SinkError(f"kafka: produce failed: {_describe(exc)}") from exc

    async def _send(
        self, producer: AIOKafkaProducer, batch: Sequence[Delivery], futures: list[Any]
    ) -> list[JournalRecord]:
        """Build and submit batches as records are made (the broker works meanwhile);
        append the ack futures to ``futures``; return the records submitted."""
        mode, default_topic = self.config.mode, self.config.topic
        max_record_bytes = self.config.max_record_bytes
        builders: dict[tuple[str, int], Any] = {}
        inflight = self._inflight
        sent: list[JournalRecord] = []
        topics = self._topics

        async def submit(slot: tuple[str, int], builder: Any) -> None:
            fut = await producer.send_batch(builder, slot[0], partition=slot[1])
            # Whoever awaits it (or nobody, after a failure), its outcome counts as read:
            # no "exception was never retrieved" later.
            fut.add_done_callback(_settle)
            futures.append(fut)
            inflight.append(fut)
            while len(inflight) > self.config.max_in_flight:
                oldest = inflight.popleft()
                if not oldest.done():
                    # Wait without consuming the outcome: its owner's confirmed() reads it.
                    await asyncio.wait((oldest,))

        # (record, route) pairs: a RouteBatch (one route for all) makes no Delivery at all.
        pairs: Iterable[tuple[JournalRecord, Route]]
        pairs = zip(batch.records, repeat(batch.route)) if type(batch) is RouteBatch else batch
        binary = mode == "binary"
        for record, route in pairs:
            template = route.topic or default_topic
            parts = None
            if binary and "{" not in template:
                # The fast path: the record from the stored attributes and data.
                parts = binary_parts(record.attributes, record.data_json)
            if parts is not None:
                topic = template
                key, value, headers, event_id = parts
                # An upper bound of KafkaRecord.size (the event's JSON holds every header
                # value with more framing than the header names add); exact only if needed.
                size = record.size + (len(key) if key else 0) + 32
                if size > max_record_bytes:
                    size = KafkaRecord(topic, key, value, headers).size
            else:
                event = record.event
                try:
                    topic = render_topic(template, event)
                except EventError as exc:
                    await self._dead_letter(Delivery(record, route), str(exc))
                    continue
                built = build_record(event, topic, mode)
                key, value, headers, event_id = built.key, built.value, built.headers, event.id
                size = built.size
            if size > max_record_bytes:
                reason = f"record of {size} bytes > max_record_bytes"
                await self._dead_letter(Delivery(record, route), reason)
                continue
            known = topics.get(topic)
            if known is None:
                if len(topics) >= MAX_CACHED_TOPICS:
                    topics.clear()
                known = topics[topic] = await self._topic(producer, topic)
            partitions, partition_of_key = known
            partition = partition_of_key.get(key) if key is not None else None
            if partition is None:
                partition = partition_for(key, partitions, event_id)
                if key is not None:
                    if len(partition_of_key) >= MAX_CACHED_KEYS:
                        partition_of_key.clear()
                    partition_of_key[key] = partition
            slot = (topic, partition)
            builder = builders.get(slot)
            if builder is None:
                builder = builders[slot] = producer.create_batch()
            ts = int(record.appended_at * 1000)
            if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                await submit(slot, builder)
                builder = builders[slot] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                    raise SinkError("kafka: a record does not fit an empty batch")
            sent.append(record)
        for slot, builder in builders.items():
            if builder.record_count():
                await submit(slot, builder)
        return sent

    async def _topic(
        self, producer: AIOKafkaProducer, topic: str
    ) -> tuple[list[int], dict[bytes, int]]:
        """``topic``'s sorted partitions, and an empty key → partition cache for it."""
        partitions = sorted(await producer.partitions_for(topic))
        if not partitions:
            raise SinkError(f"kafka: topic {topic!r} has no partitions")
        return partitions, {}

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


def _settle(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
