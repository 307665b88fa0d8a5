"""Cluster mode's Slack and outbound-webhook delivery: a sink fed from the events topic.

In cluster mode a Slack or webhook sink does not read the local journal. Its
:class:`DeliveryConsumer` (the sink's worker, in :attr:`App.workers` as a
:class:`~argbridge.sinks.base.SinkWorker` is otherwise) consumes the internal events
topic as the consumer group ``cluster.group_id("delivery.<sink>")``, together with the
sink's retry topics (:mod:`argbridge.cluster.retry_topics`). Per record, in partition
order:

1. decode the CloudEvent (:mod:`argbridge.cluster.codec`; an unreadable record is
   counted as discarded ``unreadable``, logged, and skipped);
2. drop a repeat of its id seen on the partition within ``cluster.delivery_dedupe_window``
   (:class:`~argbridge.cluster.dedupe.DedupeWindow`; counted as discarded ``duplicate``);
3. apply the routes (the daemon's :class:`~argbridge.router.Router`, with ``[ops]``);
4. deliver through the sink. A failure for now never waits in the partition: the event
   goes to the retry topic of its next attempt with its due time (a webhook sink
   schedules through its own ``retry_schedule``, via :class:`RetryTopicJournal`; a Slack
   sink through ``cluster.delivery_retry_schedule``); a permanent failure or an exhausted
   schedule is a dead letter in this instance's journal (``argbridge dlq``);
5. commit the offsets after delivery: a Slack post's at once (one by one), a webhook
   batch's with the round's other partitions (one commit request per fetched round).

A retry-topic record not due yet pauses its partition (the record is read again when
due; the other partitions go on). On assignment, the dedupe window of each newly
assigned partition is re-read from ``offsets_for_times(now - window)`` up to the group's
committed offset; a partition this consumer kept (its committed offset is the one this
consumer committed) keeps its window. The rebuild time is logged
(``delivery.dedupe_rebuilt``) and observed (``argbridge_delivery_dedupe_rebuild_seconds``).

Delivery is at least once: an instance that dies after delivering a batch and before
committing it leaves that batch to the next owner, whose rebuilt window does not hold it
(at most one Slack post, or one round of webhooks: ``batch_size`` records).
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import anyio
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from argbridge.backoff import Backoff
from argbridge.clock import Clock
from argbridge.cluster.codec import RecordError, decode_event, header
from argbridge.cluster.dedupe import DedupeWindow, rebuild_start
from argbridge.cluster.retry_journal import RetryProducer, RetryTopicJournal, ensure_topics
from argbridge.cluster.retry_topics import RetryInfo, RetryTopics, parse_retry
from argbridge.cluster.roles import EventsAcked
from argbridge.config.cluster import ClusterConfig
from argbridge.config.settings import Settings, SinkConfig
from argbridge.config.sinks import WebhookSinkConfig
from argbridge.delivery.schedule import RetrySchedule
from argbridge.errors import JournalClosed, PermanentDeliveryError, SinkStopped
from argbridge.events import CloudEvent
from argbridge.journal import JournalRecord, RetryItem
from argbridge.journal.roles import SinkJournal
from argbridge.metrics import Metrics
from argbridge.registry import build_sink
from argbridge.router import Router
from argbridge.sinks.base import Background, Delivery, Sink, SinkContext
from argbridge.sinks.kafka_client import client_kwargs, describe
from argbridge.sinks.requeue import refresh_dead_letter_gauge, route_again

#: How long one fetch waits for records before the loop looks at its stop flag again.
POLL_MS = 200
CLOSE_TIMEOUT = 10.0
#: How long the broker may hold a fetch that finds nothing new. aiokafka has one fetch in
#: flight per broker: a partition with records waiting behind a long poll on caught-up
#: ones waited for it (the default 500 ms), measured in bench_cluster_delivery.
FETCH_WAIT_MS = 50


class Outcome(enum.Enum):
    """What handling one record came to."""

    DELIVERED = "delivered"  # delivered, rescheduled or dead-lettered: commit it
    SKIPPED = "skipped"  # nothing to send (a repeat, not routed here, unreadable, batched)
    PAUSED = "paused"  # a retry not due yet: read again when due


DELIVERED, SKIPPED, PAUSED = Outcome.DELIVERED, Outcome.SKIPPED, Outcome.PAUSED


@runtime_checkable
class OwnRetries(Protocol):
    """A sink that runs its own retry schedule (webhooks): one attempt of an item, its
    outcome recorded through the sink's journal role (a retry, a dead letter)."""

    async def attempt(self, item: JournalRecord | RetryItem) -> None: ...


@dataclass(frozen=True, slots=True)
class Rebuild:
    """One dedupe-window rebuild: partitions re-read, ids found, records read, seconds."""

    partitions: int
    kept: int
    ids: int
    records: int
    seconds: float


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callback interface (its documented extension point)."""

    def __init__(self, owner: DeliveryConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner._assigned(set(assigned))


class DeliveryConsumer:
    """Feeds one Slack or webhook sink from the events topic (see the module doc).

    Has what the runtime, ``/readyz`` and ``argbridge status`` read of a sink worker:
    :attr:`started`, :attr:`last_error`, :attr:`in_flight`, :meth:`run`, :meth:`stop`,
    :meth:`poke`, :meth:`set_router`.
    """

    def __init__(
        self,
        sink: Sink,
        ctx: SinkContext,
        router: Router,
        cluster: ClusterConfig,
        retries: RetryProducer,
        *,
        schedule: RetrySchedule,
        events_acked: EventsAcked | None = None,
        local: SinkJournal | None = None,
        instance_id: str = "argbridge",
        batch_size: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        self.sink = sink
        self.ctx = ctx
        self.name = ctx.name
        self.router = router
        self.cluster = cluster
        self.retries = retries
        self.schedule = schedule
        self.events_acked = events_acked
        self.local = local
        self.instance_id = instance_id
        self.batch_size = batch_size
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.topic = cluster.events_topic_name
        self.group_id = cluster.group_id(f"delivery.{self.name}")
        self.window: DedupeWindow[TopicPartition] = DedupeWindow(cluster.delivery_dedupe_window)
        self.started = False
        self.last_error: str | None = None
        self.in_flight = 0
        #: The last dedupe-window rebuild (``None``: none yet).
        self.last_rebuild: Rebuild | None = None
        #: Set (and replaced) after each rebalance's window rebuild.
        self.rebalanced = anyio.Event()
        #: Set (and replaced) when a partition waits for a retry's due time.
        self.paused = anyio.Event()
        #: Set once :meth:`run` returned (its Kafka clients closed).
        self.done = anyio.Event()
        #: Set (and replaced) after each offset commit.
        self.committed = anyio.Event()
        self._stopping = anyio.Event()
        #: Set (and replaced) each time a fetch finds nothing new.
        self._idle = anyio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: AIOKafkaConsumer | None = None
        #: The offset this consumer last committed per partition.
        self._committed: dict[TopicPartition, int] = {}
        self._round_idle = anyio.Event()
        self._round_idle.set()
        #: Set while the windows of the assigned partitions are complete (cleared from
        #: a revoke until the next assignment's rebuild is done).
        self._windows_ready = anyio.Event()
        self._resume: dict[TopicPartition, anyio.CancelScope] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        if isinstance(ctx.journal, RetryTopicJournal):
            ctx.journal.on_scheduled = self.scheduled

    # -- the worker interface ---------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def poke(self) -> None:
        """Nothing to re-read locally: the events topic is this sink's source."""

    def set_router(self, router: Router) -> None:
        self.router = router

    async def caught_up(self) -> None:
        """Return at the next fetch that finds nothing new (everything fetched before it
        was delivered, rescheduled or dead-lettered, and committed)."""
        await self._idle.wait()

    async def run(self) -> None:
        log = self.ctx.log
        try:
            while not self._stopping.is_set():
                try:
                    await self._start()
                    break
                except SinkStopped:
                    raise
                except Exception as exc:
                    await self._failed(exc, "start")
            if self._stopping.is_set():
                return
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if isinstance(self.sink, Background):
                    tg.start_soon(self.sink.background, name=f"{self.name}-background")
                if self.events_acked is not None and self.local is not None:
                    tg.start_soon(self._follow_local_cursor, self.events_acked, self.local)
                try:
                    await self._consume()
                finally:
                    tg.cancel_scope.cancel()
        except SinkStopped as exc:
            self.last_error = f"stopped: {exc}"
            log.error("sink.stopped", reason=str(exc))
        finally:
            try:
                await self._close()
            finally:
                self.done.set()

    async def _start(self) -> None:
        await self.sink.start()
        # The events topic too: subscribed to before it exists, a consumer would only see
        # it at its next metadata refresh (minutes).
        topics = [self.topic, *self.retries.topics.topics()]
        await ensure_topics(self.cluster, topics, self.cluster.events_partitions, self.ctx.log)
        await self.retries.start()
        kwargs = {**client_kwargs(self.cluster), "client_id": f"{self.instance_id}-{self.name}"}
        session_ms = int(self.cluster.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            **kwargs,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=int(self.cluster.heartbeat_interval * 1000),
            max_poll_records=self.batch_size,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        reader = AIOKafkaConsumer(
            **{**kwargs, "client_id": f"{self.instance_id}-{self.name}-dedupe"},
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        try:
            await consumer.start()
            await reader.start()
        except BaseException:
            for c in (consumer, reader):
                with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    with contextlib.suppress(Exception):
                        await c.stop()
            raise
        self._consumer, self._reader = consumer, reader
        consumer.subscribe(
            topics=[self.topic, *self.retries.topics.topics()], listener=_Listener(self)
        )
        self.started = True
        self.last_error = None
        self.backoff.reset()
        self.ctx.log.info("delivery.started", group=self.group_id, topic=self.topic)

    async def _close(self) -> None:
        consumer, reader = self._consumer, self._reader
        self._consumer = self._reader = None
        for c in (consumer, reader):
            if c is not None:
                with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    with contextlib.suppress(Exception):
                        await c.stop()
        await self.retries.aclose()

    async def _failed(self, exc: BaseException, during: str) -> None:
        error_type = type(exc).__name__
        self.last_error = f"{during}: {error_type}: {exc}"
        self.ctx.metrics.errors.labels(self.name, "sink", error_type).inc()
        delay = self.backoff.next_delay()
        self.ctx.log.warning(
            "sink.failed", during=during, error=exc, error_type=error_type, retry_in=round(delay, 3)
        )
        with anyio.move_on_after(delay):
            await self._stopping.wait()

    async def _follow_local_cursor(self, acked: EventsAcked, local: SinkJournal) -> None:
        """This sink's local journal cursor follows the events topic's acks: what Kafka
        holds is this sink's to deliver, not the local journal's to keep."""
        while True:
            cursor = local.cursor(self.name)
            await acked.wait_acked(cursor + 1)
            try:
                await local.ack(self.name, acked.acked_seq())
            except JournalClosed:
                return

    # -- consuming --------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=POLL_MS)
            except KafkaError as exc:
                await self._failed(exc, "fetch")
                continue
            if not batches:
                self._idle.set()
                self._idle = anyio.Event()
                continue
            # Records can arrive while a rebalance's window rebuild runs: none is handled
            # before its partition's window is complete (a record from before a change
            # of owner is then a repeat the rebuilt window knows).
            if not await self._unless_stopped(self._windows_ready):
                return
            assignment = consumer.assignment()
            batches = {tp: recs for tp, recs in batches.items() if tp in assignment}
            self._round_idle = anyio.Event()
            done: dict[TopicPartition, int] = {}
            try:
                async with anyio.create_task_group() as tg:
                    for tp, records in batches.items():
                        tg.start_soon(self._partition, consumer, tp, records, done)
                await self._commit(consumer, done)
            finally:
                self._round_idle.set()

    async def _unless_stopped(self, event: anyio.Event) -> bool:
        """Wait for ``event``; ``False`` when :meth:`stop` came first."""
        async with anyio.create_task_group() as tg:

            async def on_stop() -> None:
                await self._stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_stop)
            await event.wait()
            tg.cancel_scope.cancel()
        return event.is_set()

    async def _partition(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord[Any, Any]],
        done: dict[TopicPartition, int],
    ) -> None:
        """Deliver one partition's records in order; ``done[tp]`` is then the offset to
        commit (the round commits every partition's in one request).

        A sink with its own retries (webhooks) gets an events partition's new events in
        one ``deliver`` (its ``concurrency`` at a time; each outcome recorded by the sink,
        as outside a cluster); otherwise (Slack: in order, one by one) each event is
        delivered before the next is read."""
        batch: list[tuple[ConsumerRecord[Any, Any], list[Delivery]]] | None = None
        if isinstance(self.sink, OwnRetries) and not self.retries.topics.is_retry(tp.topic):
            batch = []
        for rec in records:
            try:
                outcome = await self._record(consumer, tp, rec, batch)
            except SinkStopped:
                raise
            except Exception as exc:
                # Kafka did not take a retry (or a bug): read again from here.
                self._forget(tp, rec)
                await self._redo(consumer, tp, rec.offset, batch, done, exc)
                return
            if outcome is PAUSED:  # a retry not due yet: its partition is paused
                done[tp] = rec.offset
                return
            done[tp] = rec.offset + 1
            if outcome is DELIVERED:
                # One by one (Slack): committed at once, so a death between a post and
                # its commit repeats that post only, not the round's.
                await self._commit(consumer, {tp: rec.offset + 1})
        if batch:
            try:
                await self._deliver([d for _, ds in batch for d in ds], None, 0, None)
            except SinkStopped:
                raise
            except Exception as exc:
                await self._redo(consumer, tp, batch[0][0].offset, batch, done, exc)
                return
        self.backoff.reset()

    async def _redo(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        offset: int,
        batch: list[tuple[ConsumerRecord[Any, Any], list[Delivery]]] | None,
        done: dict[TopicPartition, int],
        exc: Exception,
    ) -> None:
        """Read ``tp`` again from its first record not handled (``offset``, or the first
        of the undelivered batch), after a backoff."""
        if batch:
            for r, _ in batch:
                self._forget(tp, r)
            offset = min(offset, batch[0][0].offset)
        consumer.seek(tp, offset)
        done[tp] = offset
        await self._failed(exc, "deliver")

    async def _commit(self, consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> None:
        offsets = {tp: o for tp, o in done.items() if self._committed.get(tp) != o}
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:
            # Lost partitions meanwhile (a rebalance): their next owner delivers again what
            # this round delivered; said in the module doc.
            self.ctx.log.warning("delivery.commit_failed", error=describe(exc))
            return
        self._committed.update(offsets)
        self.committed.set()
        self.committed = anyio.Event()

    def _key(self, tp: TopicPartition, rec: ConsumerRecord[Any, Any], event_id: str) -> str:
        if self.retries.topics.is_retry(tp.topic):
            attempt = header(rec.headers or (), "argbridge-retry-attempt") or b"?"
            return f"{event_id}#retry{attempt.decode(errors='replace')}"
        return event_id

    def _forget(self, tp: TopicPartition, rec: ConsumerRecord[Any, Any]) -> None:
        with contextlib.suppress(Exception):
            event_id = (header(rec.headers or (), "ce_id") or b"").decode()
            self.window.forget(tp, self._key(tp, rec, event_id))

    async def _record(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        rec: ConsumerRecord[Any, Any],
        batch: list[tuple[ConsumerRecord[Any, Any], list[Delivery]]] | None,
    ) -> Outcome:
        """Handle one record (a new event is added to ``batch`` when there is one)."""
        ctx, name = self.ctx, self.name
        headers = list(rec.headers or ())
        retry: RetryInfo | None = None
        try:
            if self.retries.topics.is_retry(tp.topic):
                retry = parse_retry(headers)
            event = decode_event(headers, rec.value)
        except RecordError as exc:
            ctx.metrics.discarded.labels(name, "sink", "unreadable").inc()
            ctx.log.warning(
                "delivery.unreadable_record", partition=str(tp), offset=rec.offset, error=str(exc)
            )
            return SKIPPED
        if retry is not None:
            wait = retry.due_at - ctx.clock.time()
            if wait > 0:
                self._pause(consumer, tp, rec.offset, wait)
                return PAUSED
        ts = rec.timestamp / 1000.0
        if self.window.check(tp, self._key(tp, rec, event.id), ts):
            ctx.metrics.discarded.labels(name, "sink", "duplicate").inc()
            return SKIPPED
        size = len(rec.value or b"")
        record = JournalRecord(rec.offset, event, size, ts)
        if retry is None:
            routes = self.router.routes_for(name, event)
            if not routes:
                return SKIPPED
            deliveries = [Delivery(record, r) for r in routes]
            ctx.metrics.received.labels(name, "sink").inc(len(deliveries))
            if batch is not None:
                batch.append((rec, deliveries))
                return SKIPPED  # delivered with the batch
            await self._deliver(deliveries, record, 0, None)
            return DELIVERED
        item = RetryItem(name, rec.offset, event, retry.attempt, retry.due_at, retry.error)
        await self._deliver(route_again(name, self.router, record), record, retry.attempt, item)
        return DELIVERED

    async def _deliver(
        self,
        deliveries: list[Delivery],
        record: JournalRecord | None,
        made: int,
        item: RetryItem | None,
    ) -> None:
        """One event through the sink (``record``; ``None``: a batch for a sink with its
        own retries): delivered, rescheduled in Kafka, or dead-lettered. Raises only when
        Kafka did not take a retry (the records are then read again)."""
        ctx, sink = self.ctx, self.sink
        self.in_flight = len(deliveries)
        try:
            if item is not None and isinstance(sink, OwnRetries):
                await sink.attempt(item)  # the sink records its own next retry
                return
            if record is None:  # the sink records each outcome (a failure here is Kafka's)
                await sink.deliver(deliveries)
                return
            try:
                await sink.deliver(deliveries)
            except (SinkStopped, anyio.get_cancelled_exc_class()):
                raise
            except PermanentDeliveryError as exc:
                await ctx.journal.dead_letter(self.name, item or record, str(exc), made + 1)
                await refresh_dead_letter_gauge(ctx)
                return
            except Exception as exc:  # SinkError, and bugs: retry later, never drop
                made += 1
                delay = self.schedule.next_delay(made)
                error = f"{type(exc).__name__}: {exc}"
                ctx.metrics.errors.labels(self.name, "sink", type(exc).__name__).inc()
                if delay is None:
                    reason = f"gave up after {made} attempt(s): {error}"
                    await ctx.journal.dead_letter(self.name, item or record, reason, made)
                    ctx.log.warning("delivery.dead_letter", event_id=record.event.id)
                    await refresh_dead_letter_gauge(ctx)
                    return
                due = ctx.clock.time() + delay
                await self.retries.schedule(record.event, made, due, error)
                self.scheduled(record.event, made, due)
                return
        finally:
            self.in_flight = 0

    def scheduled(self, event: CloudEvent, attempt: int, due_at: float) -> None:
        """A retry went to Kafka (counted and logged; the sink's or this consumer's)."""
        self.ctx.metrics.retries_scheduled.labels(self.name).inc()
        self.ctx.log.info(
            "delivery.retry_scheduled",
            event_id=event.id,
            attempt=attempt,
            topic=self.retries.topics.topic_for(attempt),
            in_s=round(due_at - self.ctx.clock.time(), 3),
        )

    def _pause(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, wait: float
    ) -> None:
        consumer.seek(tp, offset)
        consumer.pause(tp)
        old = self._resume.pop(tp, None)
        if old is not None:
            old.cancel()
        scope = anyio.CancelScope()
        self._resume[tp] = scope
        assert self._tg is not None
        self._tg.start_soon(self._resume_at, consumer, tp, self.ctx.clock.time() + wait, scope)

    async def _resume_at(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, due: float, scope: anyio.CancelScope
    ) -> None:
        with scope:
            clock = self.ctx.clock
            self.paused.set()
            self.paused = anyio.Event()
            await clock.sleep(due - clock.time())
            if self._resume.get(tp) is scope:
                del self._resume[tp]
            if tp in consumer.assignment():
                consumer.resume(tp)

    # -- rebalances -------------------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        if self._windows_ready.is_set():
            self._windows_ready = anyio.Event()
        # The round in flight finishes (and commits) before the partitions move on.
        with anyio.move_on_after(self.cluster.session_timeout):
            await self._round_idle.wait()
        for tp in revoked:
            scope = self._resume.pop(tp, None)
            if scope is not None:
                scope.cancel()

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._rebuild(assigned)
        except Exception as exc:
            # Delivery goes on with what the windows hold (repeats of ids the rebuild did
            # not reach may be delivered again): said loudly, counted.
            self.ctx.metrics.errors.labels(self.name, "sink", "dedupe_rebuild").inc()
            self.ctx.log.error("delivery.dedupe_rebuild_failed", error=exc)
        finally:
            self._windows_ready.set()

    async def _rebuild(self, assigned: set[TopicPartition]) -> None:
        consumer, reader = self._consumer, self._reader
        if consumer is None or reader is None:
            return
        clock = self.ctx.clock
        began = clock.monotonic()
        held = {tp for tp in self._committed if self.window.holds(tp)}
        self.window.drop(held - assigned)
        fresh: dict[TopicPartition, int] = {}
        kept = 0
        for tp in assigned:
            committed = await consumer.committed(tp)
            if tp in held and committed == self._committed.get(tp):
                kept += 1
                continue
            self.window.drop([tp])
            self.window.keep(tp)
            self._committed.pop(tp, None)
            if committed:
                fresh[tp] = committed
        ids, records = await self._reread(reader, fresh)
        seconds = clock.monotonic() - began
        self.last_rebuild = Rebuild(len(fresh), kept, ids, records, seconds)
        self.ctx.metrics.dedupe_rebuild.labels(self.name).observe(seconds)
        self.ctx.log.info(
            "delivery.dedupe_rebuilt",
            assigned=len(assigned),
            events_partitions=sorted(tp.partition for tp in assigned if tp.topic == self.topic),
            reread=len(fresh),
            kept=kept,
            ids=ids,
            records=records,
            seconds=round(seconds, 4),
        )
        self.rebalanced.set()
        self.rebalanced = anyio.Event()

    async def _reread(
        self, reader: AIOKafkaConsumer, ends: dict[TopicPartition, int]
    ) -> tuple[int, int]:
        """Fill the window of each partition from ``now - window`` to its committed offset."""
        if not ends:
            return 0, 0
        start_ms = rebuild_start(self.ctx.clock.time(), self.window.window)
        reader.assign(list(ends))
        found = await reader.offsets_for_times(dict.fromkeys(ends, start_ms))
        todo: dict[TopicPartition, int] = {}
        for tp, end in ends.items():
            at = found.get(tp)
            if at is None or at.offset >= end:
                continue
            reader.seek(tp, at.offset)
            todo[tp] = end
        ids = records = 0
        while todo:
            batches = await reader.getmany(*todo, timeout_ms=POLL_MS)
            for tp, recs in batches.items():
                until = todo.get(tp)
                if until is None:
                    continue
                for rec in recs:
                    if rec.offset >= until:
                        break
                    records += 1
                    event_id = header(rec.headers or (), "ce_id")
                    if event_id is None:
                        try:
                            event_id = decode_event(list(rec.headers or ()), rec.value).id.encode()
                        except RecordError:
                            continue
                    key = self._key(tp, rec, event_id.decode(errors="replace"))
                    self.window.add(tp, key, rec.timestamp / 1000.0)
                    ids += 1
                if recs and recs[-1].offset + 1 >= until:
                    del todo[tp]
            for tp in list(todo):
                if await reader.position(tp) >= todo[tp]:
                    del todo[tp]
        reader.assign([])
        return ids, records


#: The sink types cluster mode feeds from the events topic instead of the local journal.
CLUSTER_FED = frozenset({"slack", "webhook"})


def build_delivery(
    name: str,
    cfg: SinkConfig,
    settings: Settings,
    local: SinkJournal,
    metrics: Metrics,
    clock: Clock,
    router: Router,
    *,
    events_acked: EventsAcked | None,
    instance_id: str,
) -> tuple[Sink, DeliveryConsumer]:
    """A cluster-fed sink (type in :data:`CLUSTER_FED`) and its delivery consumer."""
    cluster = settings.cluster
    if isinstance(cfg, WebhookSinkConfig):
        attempts = len(cfg.retry_schedule)
    else:
        attempts = len(cluster.delivery_retry_schedule)
    topics = RetryTopics.of(cluster.deployment, name, attempts)
    retries = RetryProducer(cluster, topics, f"{instance_id}-{name}-retry")
    ctx = SinkContext(name, RetryTopicJournal(local, retries), metrics, clock)
    sink = build_sink(cfg, ctx, settings)
    consumer = DeliveryConsumer(
        sink,
        ctx,
        router,
        cluster,
        retries,
        schedule=RetrySchedule(cluster.delivery_retry_schedule),
        events_acked=events_acked,
        local=local,
        instance_id=instance_id,
        batch_size=cfg.batch_size,
        backoff=Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
    )
    return sink, consumer
