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
(:func:`~argbridge.delivery.kafka_records.binary_headers_of`: no ``CloudEvent`` decode,
no re-encoding of ``data``); a :class:`~argbridge.sinks.base.RouteBatch` (one route for
the whole batch, the usual case) takes a loop of its own (:meth:`KafkaSink._fill_fixed`:
no ``Delivery`` per event, one builder per partition), each key's partition is
remembered per topic, and the latency histogram takes the batch in one call.

Every aiokafka call is bounded (``call_timeout``): the idempotent producer can hang
forever (aiokafka #1101) and a frozen broker accepts connections but never answers. On
any failure the producer is stopped (bounded) and dropped; the worker retries the batch
with backoff and the next ``deliver`` connects again, while the journal absorbs the
backlog — nothing is lost, at worst a batch is sent twice (consumers dedupe on
``ce_id``). A record over ``max_record_bytes`` is dead-lettered alone (never retried).

The idempotent producer (on by default, ``acks=all``) retries a batch through a leader
election or a broker restart by itself, and the broker drops what it already has: no
duplicates, as long as the producer is not abandoned first. Its batches never expire
(aiokafka #1101), so only ``call_timeout`` abandons it, and a producer given up on
re-sends with a new producer id, which the broker cannot recognise. So while the readiness
probe finds the brokers unreachable, the deadline of its sends and ack waits keeps moving
(:meth:`_call_bound`): the sink waits for the brokers (not ready, the journal absorbing
the backlog) and resumes where it was. ``call_timeout`` (60 s) still bounds a produce to
reachable brokers, several times a measured kill -9 leader election (docs/kafka.md).

At start the sink checks that its fixed topics exist (:mod:`.kafka_topics`, which owns the
admin client, the topic checks and the refused topics) and creates the missing ones when
``create_topics`` is on, else reports them (start fails, ``/readyz`` names them, the
worker retries with backoff). A record the broker refuses for good (a
templated topic that does not exist, topic authorization failed, too large) is
dead-lettered with the reason and logged at error level, never retried forever.

Readiness follows the brokers: a probe (a metadata request through the admin client)
runs every quarter of ``readiness_timeout`` and is bounded by half of it, so ``/readyz``
turns not ready within ``readiness_timeout`` of the brokers going away and ready again
within it of their return. :meth:`resumed` lets the worker end its retry backoff as soon
as unreachable brokers answer again. Connection failures are named (authentication
failed, certificate not trusted, refused, timed out: :mod:`.kafka_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, Literal, NoReturn

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from orjson import loads

from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_records import (
    KafkaRecord,
    binary_headers_of,
    binary_parts,
    build_record,
    partition_for,
    render_topic,
)
from argbridge.errors import EventError, SinkError
from argbridge.journal import JournalRecord
from argbridge.router import Route
from argbridge.sinks import kafka_client
from argbridge.sinks.base import Delivery, Health, RouteBatch, SinkContext
from argbridge.sinks.kafka_client import new_producer
from argbridge.sinks.kafka_topics import Refused, SinkTopics
from argbridge.sinks.requeue import RequeueRunner, refresh_dead_letter_gauge

#: Bound on stopping a producer (it flushes; with a dead broker that never ends).
CLOSE_TIMEOUT = 5.0
#: Keys whose partition is remembered per topic, and topics remembered (a templated
#: topic may name one per subject): when full, the cache starts over (issue 17: an entry
#: per distinct key forever was +4.2 MB per 17,850 keys). Active runs and incidents
#: are far fewer; a miss costs one bounded-LRU hash lookup.
MAX_CACHED_KEYS = 4096
MAX_CACHED_TOPICS = 256
#: Errors that no retry fixes: the records are dead-lettered with the reason.
_PERMANENT = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
)


class KafkaSink:
    """Produces CloudEvents to Kafka; one producer, reconnecting on failure."""

    reports_sent: Literal[True] = True

    def __init__(
        self,
        config: KafkaSinkConfig,
        ctx: SinkContext,
        settings: Settings,
        *,
        key_fallback: bool = False,
    ) -> None:
        self.name = ctx.name
        self.config = config
        self.ctx = ctx
        #: Key an event without ``partitionkey`` by its subject, else its id (cluster
        #: mode's events topic: every record keyed); off, such records have no key.
        self.key_fallback = key_fallback
        self.producer: AIOKafkaProducer | None = None
        #: Per topic: its sorted partitions, and the partition of each key seen (a run's
        #: events share a key: the partitioner's hash is worth remembering).
        self._partitions: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        #: Ack futures of batches handed to the producer, oldest first (the in-flight
        #: bound spans submits: the worker submits the next batch before acks arrive).
        self._inflight: deque[Any] = deque()
        self._state = "not started"
        self._ok = False
        self.requeue = RequeueRunner(ctx, settings, self.deliver)
        #: The admin client, the topic check at start, partitions and refused topics.
        self.topics = SinkTopics(config, ctx.name, settings, ctx.clock, ctx.log)
        self._connect_lock = anyio.Lock()
        #: What the last probe said: ``None`` reachable, else why not.
        self._unreachable: str | None = None
        self._cause_kind: str | None = None
        self._probed = anyio.Event()
        self._probing = False
        self._started = False
        #: Producer stops still running (a frozen broker): finished in aclose.
        self._stops = kafka_client.ProducerStops(ctx.log)
        #: What a probe that finds the brokers reachable does next (``True``: ready). The
        #: exactly-once sink, which drives this one for its records, sets its own.
        self.when_reachable: Callable[[], Awaitable[bool]] = self._reconnect
        #: Call bounds of an idempotent producer's sends and ack waits (see _call_bound).
        self._bounds: set[anyio.CancelScope] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        await self._connect()
        await self.ensure_topics()
        await refresh_dead_letter_gauge(self.ctx)

    async def _connect(self) -> None:
        async with self._connect_lock:
            if self.producer is None:
                await self._connect_locked()

    async def _connect_locked(self) -> None:
        try:
            producer = new_producer(self.config)
        except (ValueError, KafkaError) as exc:  # settings aiokafka refuses
            self._fail(exc, "configure")
            raise SinkError(f"kafka: cannot create the producer: {_describe(exc)}") from exc
        try:
            with anyio.fail_after(self.config.call_timeout):
                await producer.start()
        except (Exception, TimeoutError) as exc:
            await self._stop(producer)
            cause = await self._cause(exc)
            self._ok = False
            self._state = f"broker unavailable (connect): {cause}"
            self._set_reachable(cause, kafka_client.kind(exc) or _kind_of(cause))
            raise SinkError(f"kafka: cannot connect to {self._servers()}: {cause}") from exc
        except BaseException:
            # Cancelled while connecting (the pipelined worker cancels a submit when an
            # earlier batch failed): do not leave a half-started producer behind.
            await self._stop(producer)
            raise
        self.producer = producer
        self.producer_replaced()
        self._ok = True
        self._state = f"connected to {self._servers()}"
        self.ctx.log.info("kafka.connected", servers=self._servers())

    def producer_replaced(self) -> None:
        """A new producer (this sink's, or the exactly-once sink's own): forget what the
        old one knew (partitions, acks awaited)."""
        self._partitions.clear()
        self._inflight.clear()

    async def ensure_topics(self) -> None:
        """Check that the fixed topics exist; create the missing ones (``create_topics``)
        or fail naming them (the worker retries start with backoff)."""
        try:
            with anyio.fail_after(self.config.call_timeout):
                problem = await self.topics.check()
        except SinkError as exc:
            self._ok = False
            self._state = str(exc).removeprefix("kafka: ")
            raise
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.topics.drop_admin()
            self._fail(exc, "topic check")
            raise SinkError(f"kafka: cannot check topics: {_describe(exc)}") from exc
        if problem:
            self._ok = False
            self._state = problem
            raise SinkError(f"kafka: {problem}")

    # -- readiness -----------------------------------------------------------------------

    @property
    def _probe_timeout(self) -> float:
        return self.config.readiness_timeout / 2

    async def probe(self) -> bool:
        """One health probe: a metadata request to the brokers, bounded by half of
        ``readiness_timeout``. Records the outcome for :meth:`health`; ``True`` when
        the brokers answered. On a failure the cause is named (:func:`diagnose`)."""
        try:
            with anyio.fail_after(self._probe_timeout):
                admin = await self.topics.admin()
                await admin.describe_cluster()
        except (Exception, TimeoutError) as exc:
            await self.topics.drop_admin()
            cause = await self._cause(exc)
            self._set_reachable(cause, kafka_client.kind(exc) or _kind_of(cause))
            return False
        self._set_reachable(None, None)
        return await self.when_reachable()

    async def _reconnect(self) -> bool:
        """The brokers answered a probe: when the producer was dropped, connect now, so
        ``/readyz`` says ready without waiting for the next event."""
        if self.producer is None and self._started:
            try:
                await self._connect()
            except SinkError:
                return False
        return True

    @property
    def unreachable(self) -> str | None:
        """Why the last probe (or connection attempt) found the brokers unreachable;
        ``None`` when they answered."""
        return self._unreachable

    async def _cause(self, exc: BaseException) -> str:
        """``exc`` in words; a bare bootstrap failure is diagnosed (aiokafka only logs
        why it could not connect)."""
        if kafka_client.kind(exc) is None:
            with anyio.move_on_after(self._probe_timeout):
                found = await kafka_client.diagnose(self.config, self._probe_timeout)
                if found:
                    return found
        return _describe(exc)

    @contextlib.contextmanager
    def _call_bound(self) -> Iterator[None]:
        """``fail_after(call_timeout)``, except that while the brokers are unreachable
        the deadline of an idempotent producer's calls keeps moving: abandoning it
        would re-send with a new producer id what it may have written (duplicates),
        while waiting lets it finish its own retries once the brokers are back."""
        scope = anyio.CancelScope(deadline=anyio.current_time() + self.config.call_timeout)
        if self.config.enable_idempotence:
            self._bounds.add(scope)
        try:
            with scope:
                yield
        finally:
            self._bounds.discard(scope)
        if scope.cancelled_caught:
            raise TimeoutError

    def _set_reachable(self, cause: str | None, kind: str | None) -> None:
        was = self._unreachable
        self._unreachable = cause
        self._cause_kind = kind
        if cause is not None:
            later = anyio.current_time() + self.config.call_timeout
            for scope in self._bounds:
                scope.deadline = max(scope.deadline, later)
        if cause is not None and was is None:
            self.ctx.log.warning("kafka.unreachable", servers=self._servers(), cause=cause)
        elif cause is None and was is not None:
            self.ctx.log.info("kafka.reachable", servers=self._servers())
        self._probed.set()
        self._probed = anyio.Event()

    async def next_probe(self) -> None:
        """Return after the next readiness probe (or connection attempt) recorded its
        outcome."""
        await self._probed.wait()

    def _probe_interval(self) -> float:
        if self._cause_kind in kafka_client.CONFIGURATION_KINDS:
            # Wrong credentials or an untrusted certificate: retrying soon will not
            # help, and each attempt costs the brokers a handshake. Back off.
            return self.config.retry_max
        return self.config.readiness_timeout / 4

    async def probe_loop(self) -> None:
        """Probe the brokers every quarter of ``readiness_timeout`` (``retry_max`` after a
        configuration failure) until cancelled."""
        self._probing = True
        try:
            while True:
                await self.probe()
                await self.ctx.clock.sleep(self._probe_interval())
        finally:
            self._probing = False

    async def resumed(self) -> None:
        """Return once the brokers, seen unreachable at or since this call, answer
        again: the worker then retries at once instead of finishing its backoff. Never
        returns while they stay reachable (the failure was something else) or refuse
        the configured credentials or certificates."""
        seen_down = self._unreachable is not None
        while True:
            if self._probing:
                await self._probed.wait()
            else:  # not started yet: no background probe, probe here
                await self.ctx.clock.sleep(self._probe_interval())
                await self.probe()
            if self._unreachable is not None:
                seen_down = True
            elif seen_down:
                return

    async def aclose(self) -> None:
        self._started = False  # a probe still running must not connect again
        producer, self.producer = self.producer, None
        if producer is not None:
            await self._stop(producer)
        await self.topics.drop_admin()
        await self._stops.finish(CLOSE_TIMEOUT)
        self._state = "closed"
        self._ok = False

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        await self._stops.stop(producer, min(CLOSE_TIMEOUT, self.config.call_timeout))

    def health(self) -> Health:
        if self._unreachable is not None:
            return Health(False, f"broker unavailable: {self._unreachable}")
        return Health(self._ok and self.producer is not None, self._state)

    async def background(self) -> None:
        """Redeliver requeued dead letters; probe the brokers for readiness."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.probe_loop)
            await self.requeue.run()
            tg.cancel_scope.cancel()

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
        futures: list[tuple[Any, list[JournalRecord], str]] = []
        try:
            with self._call_bound():
                sent = await self.send(producer, batch, futures)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._broken(producer, exc)

        async def confirmed() -> None:
            refused: list[tuple[list[JournalRecord], str, BaseException]] = []
            try:
                with self._call_bound():
                    for fut, members, topic in futures:
                        # asyncio.wait: a cancelled wait leaves the batch's future alone.
                        await asyncio.wait((fut,))
                        if fut.cancelled():  # its producer was stopped: retry the batch
                            raise KafkaError("the producer dropped the batch")
                        try:
                            fut.result()
                        except _PERMANENT as exc:
                            refused.append((members, topic, exc))
            except (KafkaError, OSError, TimeoutError) as exc:
                await self._broken(producer, exc)
            delivered = sent
            if refused:
                delivered = await self._refused_batches(producer, refused, sent)
            if producer is self.producer:
                self._ok = True
                self._state = f"connected to {self._servers()}"
            self.ctx.count_sent(delivered)

        return confirmed

    async def _refused_batches(
        self,
        producer: AIOKafkaProducer,
        refused: list[tuple[list[JournalRecord], str, BaseException]],
        sent: list[JournalRecord],
    ) -> list[JournalRecord]:
        """Dead-letter the records of batches the broker refused for good; return the
        rest of ``sent``. An idempotent producer is replaced afterwards: its sequence
        numbers counted the refused batch, which the broker never wrote."""
        gone: set[int] = set()
        if self.config.enable_idempotence and producer is self.producer:
            self.producer = None
            self._inflight.clear()
            await self._stop(producer)
        for members, topic, exc in refused:
            too_large = isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError)
            if too_large and len(members) > 1:
                # The topic's max.message.bytes bounds a whole batch: send the records
                # one by one, and dead-letter only those too large alone.
                members = await self._send_alone(members, topic)
            reason = f"refused by the broker: {_describe(exc)}"
            if too_large:
                reason += (
                    " (keep max_record_bytes and max_batch_bytes at or below the topic's"
                    " max.message.bytes)"
                )
            for record in members:
                await self.dead_letter(record, reason)
                gone.add(id(record))
        return [r for r in sent if id(r) not in gone]

    async def _send_alone(self, records: list[JournalRecord], topic: str) -> list[JournalRecord]:
        """Send each record to ``topic`` in a batch of its own; return those refused as
        too large."""
        refused: list[JournalRecord] = []
        route = Route(name="refused-batch", sinks=(self.name,), filters=(), topic=topic)
        for record in records:
            if self.producer is None:
                await self._connect()
            producer = self.producer
            assert producer is not None
            futures: list[tuple[Any, list[JournalRecord], str]] = []
            try:
                with self._call_bound():
                    await self.send(producer, [Delivery(record, route)], futures)
                    for fut, _, _ in futures:
                        await asyncio.wait((fut,))
                        if fut.cancelled():
                            raise KafkaError("the producer dropped the batch")
                        fut.result()
            except (MessageSizeTooLargeError, RecordListTooLargeError):
                refused.append(record)
                if self.config.enable_idempotence:
                    self.producer = None
                    await self._stop(producer)
            except (KafkaError, OSError, TimeoutError) as exc:
                await self._broken(producer, exc)
        return refused

    async def _broken(self, producer: AIOKafkaProducer, exc: BaseException) -> NoReturn:
        """Drop a producer that failed (bounded stop) and raise the retryable error."""
        self._fail(exc, "produce")
        if self.producer is producer:
            self.producer = None
            self._inflight.clear()
        await self._stop(producer)
        raise SinkError(f"kafka: produce failed: {_describe(exc)}") from exc

    async def send(
        self,
        producer: AIOKafkaProducer,
        batch: Sequence[Delivery],
        futures: list[tuple[Any, list[JournalRecord], str]],
    ) -> list[JournalRecord]:
        """Build and submit batches as records are made (the broker works meanwhile);
        append the ack futures (with each batch's records) to ``futures``; return the
        records submitted."""
        mode, default_topic = self.config.mode, self.config.topic
        max_record_bytes = self.config.max_record_bytes
        builders: dict[tuple[str, int], Any] = {}
        members: dict[tuple[str, int], list[JournalRecord]] = {}
        inflight = self._inflight
        sent: list[JournalRecord] = []
        topics = self._partitions

        idempotent = self.config.enable_idempotence

        async def submit(slot: tuple[str, int], builder: Any) -> None:
            while True:
                try:
                    fut = await producer.send_batch(builder, slot[0], partition=slot[1])
                    break
                except KafkaTimeoutError:
                    # The partition's previous batch is still unacked (one in flight per
                    # partition). The builder was not taken: an idempotent producer
                    # keeps trying within the call bound (which the outage extends).
                    if not idempotent:
                        raise
            # Whoever awaits it (or nobody, after a failure), its outcome counts as read:
            # no "exception was never retrieved" later.
            fut.add_done_callback(_settle)
            futures.append((fut, members.pop(slot), slot[0]))
            inflight.append(fut)
            while len(inflight) > self.config.max_in_flight:
                oldest = inflight.popleft()
                if not oldest.done():
                    # Wait without consuming the outcome: its owner's confirmed() reads it.
                    await asyncio.wait((oldest,))

        if type(batch) is RouteBatch and mode == "binary":
            topic = batch.route.topic or default_topic
            if "{" not in topic:
                sent = await self._fill_fixed(
                    producer, batch.records, topic, builders, members, submit
                )
                for slot, builder in builders.items():
                    if builder.record_count():
                        await submit(slot, builder)
                return sent

        # (record, route) pairs: a RouteBatch (one route for all) makes no Delivery at all.
        pairs: Iterable[tuple[JournalRecord, Route]]
        pairs = zip(batch.records, repeat(batch.route)) if type(batch) is RouteBatch else batch
        binary = mode == "binary"
        key_fallback = self.key_fallback
        for record, route in pairs:
            template = route.topic or default_topic
            parts = None
            if binary and "{" not in template:
                # The fast path: the record from the stored attributes and data. The
                # attributes are decoded here, not cached on the record: a dict per record
                # held for the whole batch (~1 KiB each, and what the collector walks).
                attrs_json, data_json = record.parts()
                parts = binary_parts(loads(attrs_json), data_json)
            if parts is not None:
                topic = template
                key, value, headers, event_id = parts
                if key is None and key_fallback:
                    key = str(record.attributes.get("subject") or event_id).encode()
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
                    await self.dead_letter(record, str(exc))
                    continue
                built = build_record(event, topic, mode)
                key, value, headers, event_id = built.key, built.value, built.headers, event.id
                size = built.size
                if key is None and key_fallback:
                    key = (event.subject or event.id).encode()
                    size += len(key)
            if size > max_record_bytes:
                reason = f"record of {size} bytes > max_record_bytes"
                await self.dead_letter(record, reason)
                continue
            known = topics.get(topic)
            if known is None:
                try:
                    known = await self._learn_topic(producer, topic)
                except Refused as exc:
                    await self.dead_letter(record, str(exc))
                    continue
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
                members[slot] = []
            ts = int(record.appended_at * 1000)
            if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                await submit(slot, builder)
                builder = builders[slot] = producer.create_batch()
                members[slot] = []
                if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                    raise SinkError("kafka: a record does not fit an empty batch")
            members[slot].append(record)
            sent.append(record)
        for slot, builder in builders.items():
            if builder.record_count():
                await submit(slot, builder)
        return sent

    async def _fill_fixed(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[JournalRecord],
        topic: str,
        builders: dict[tuple[str, int], Any],
        members: dict[tuple[str, int], list[JournalRecord]],
        submit: Callable[[tuple[str, int], Any], Awaitable[None]],
    ) -> list[JournalRecord]:
        """:meth:`send`'s loop for the usual case (binary mode, one fixed topic, one
        route for the whole batch): each record straight from the stored attributes
        and data (:func:`binary_headers_of`: no ``CloudEvent``, no re-encoding of
        ``data``), the same records as the general loop. Fills ``builders`` (and
        ``members``), submitting each as it fills up; returns the records added."""
        max_record_bytes = self.config.max_record_bytes
        key_fallback = self.key_fallback
        headers_of = binary_headers_of
        known = self._partitions.get(topic)
        partitions, partition_of_key = known if known is not None else ([], {})
        # Per partition: its builder, the records in it and its (topic, partition) slot.
        current: dict[int, tuple[Any, list[JournalRecord], tuple[str, int]]] = {}
        dropped: set[int] = set()
        # The record timestamp (ms) of the last appended_at seen: the events of a group
        # commit share it.
        last_at, ts = -1.0, 0
        for record in records:
            # The attributes are decoded here, not cached on the record: a dict per
            # record held for the whole batch (~1 KiB each, and what the collector walks).
            attrs_json, value = record.parts()
            attrs = loads(attrs_json)
            headers = headers_of(attrs)
            key = attrs.get("partitionkey")
            key = key.encode() if type(key) is str and key else None
            if key is None and key_fallback:
                key = str(attrs.get("subject") or attrs["id"]).encode()
            # An upper bound of KafkaRecord.size (the event's JSON holds every header
            # value with more framing than the header names add); exact only if needed.
            size = record.size + (len(key) if key else 0) + 32
            if size > max_record_bytes:
                size = KafkaRecord(topic, key, value, headers).size
                if size > max_record_bytes:
                    await self.dead_letter(record, f"record of {size} bytes > max_record_bytes")
                    dropped.add(id(record))
                    continue
            if known is None:
                try:
                    known = await self._learn_topic(producer, topic)
                except Refused as exc:
                    await self.dead_letter(record, str(exc))
                    dropped.add(id(record))
                    continue
                partitions, partition_of_key = known
            partition = partition_of_key.get(key) if key is not None else None
            if partition is None:
                partition = partition_for(key, partitions, str(attrs["id"]))
                if key is not None:
                    if len(partition_of_key) >= MAX_CACHED_KEYS:
                        partition_of_key.clear()
                    partition_of_key[key] = partition
            entry = current.get(partition)
            if entry is None:
                slot = (topic, partition)
                builder = builders[slot] = producer.create_batch()
                entry = current[partition] = (builder, [], slot)
                members[slot] = entry[1]
            builder, in_builder, slot = entry
            if record.appended_at != last_at:
                last_at = record.appended_at
                ts = int(last_at * 1000)
            if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                await submit(slot, builder)
                builder = builders[slot] = producer.create_batch()
                entry = current[partition] = (builder, [], slot)
                in_builder = members[slot] = entry[1]
                if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                    raise SinkError("kafka: a record does not fit an empty batch")
            in_builder.append(record)
        if dropped:
            return [r for r in records if id(r) not in dropped]
        return list(records)

    async def _learn_topic(
        self, producer: AIOKafkaProducer, topic: str
    ) -> tuple[list[int], dict[bytes, int]]:
        """``topic``'s partitions and an empty key → partition cache, remembered (the
        topics remembered start over at ``MAX_CACHED_TOPICS``); raises
        :class:`~argbridge.sinks.kafka_topics.Refused` for a topic refused for good."""
        cache = self._partitions
        if len(cache) >= MAX_CACHED_TOPICS:
            cache.clear()
        known = cache[topic] = (await self.topics.partitions(producer, topic), {})
        return known

    async def dead_letter(self, record: JournalRecord, reason: str) -> None:
        """A record no retry will deliver: into the dead letters, with the reason, an
        error-level log line and the ``refused`` error count (alert on either)."""
        await self.ctx.journal.dead_letter(self.name, record, reason, 1)
        self.ctx.metrics.errors.labels(self.name, "sink", "dead_letter").inc()
        self.ctx.log.error("kafka.dead_letter", event_id=record.event.id, reason=reason)
        await refresh_dead_letter_gauge(self.ctx)

    def _fail(self, exc: BaseException, during: str) -> None:
        self._ok = False
        self._state = f"broker unavailable ({during}): {_describe(exc)}"

    def _servers(self) -> str:
        return self.config.servers()


def _settle(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


def _describe(exc: BaseException) -> str:
    return kafka_client.describe(exc)


def _kind_of(cause: str) -> str | None:
    """The failure kind a description starts with (see :mod:`.kafka_client`)."""
    for kind in kafka_client.KINDS:
        if kind in cause:
            return kind
    return None
