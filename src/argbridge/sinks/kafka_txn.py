"""The ``kafka`` sink with ``delivery = "exactly-once"``: one Kafka transaction per
journal batch, carrying the sink's position on a compacted progress topic.

The pattern of Kafka Connect's exactly-once source connectors (KIP-618) and of
Materialize's Kafka sink. This module owns the sink itself: its identity, start-up and
reconnects, the reconciliation of the journal cursor with the committed position, and
the order of transactions (one open at a time, pipelined with the worker's reads). The
parts it is made of: :mod:`.kafka_txn_driver` (one transaction's life and the
transactional producer), :mod:`.kafka_txn_progress` (the progress topic and the stable
ids), :mod:`.kafka_txn_fencing` (recognising a fence; the stop and the alert). The
records themselves are built and batched by :class:`~argbridge.sinks.kafka.KafkaSink`
(topic templates, several topics and partitions per batch, binary and structured modes,
dead letters for unroutable or oversized events), which this sink drives inside each
transaction.

Identity. A stable instance id (``instance_id``, or made once and kept in the journal's
state store, i.e. the state dir) gives ``transactional_id = prefix + instance + "." +
sink`` and the progress key ``instance/sink``; the journal id (made once per journal,
kept in its state store) goes into every position, so a position is only ever applied to
the journal it was written from (:func:`~argbridge.delivery.kafka_progress.reconcile`).

Start (and every reconnect after a failure): start the producer, whose
``InitProducerId`` fences any earlier incarnation with this ``transactional_id`` and
completes (aborts) its open transaction; only then read the progress record back
``read_committed``, up to the high watermark seen after the fence, so no commit of the
fenced producer can land after the read. At start the journal cursor is then moved to
the committed position (forward: a crash between commit and cursor update; backward: the
progress topic wins); every batch's records at or before the committed position are
skipped, so a batch retried after an ambiguous commit failure is never produced twice.

Delivery: ``begin`` → the batch's records (any topics/partitions) → the position record →
``commit``, the whole transaction bounded by ``call_timeout``. The worker moves the
journal cursor only after ``deliver`` returned, i.e. after the commit. Any failure drops
the producer (bounded stop) and raises a retryable :class:`SinkError`; the next attempt
reconnects, which aborts the open transaction (or finds it committed, via the progress
record). ``ProducerFenced`` — another daemon runs with this instance id and sink — stops
the sink for good: :class:`SinkStopped`, an error log, the error metric and an
``argbridge.sink.fenced`` alert event in the journal. Retention: the cursor never passes
what was committed, and the journal keeps every event after the cursor.

Readiness is the at-least-once sink's (:class:`~argbridge.sinks.kafka.KafkaSink`, which
this sink drives): a probe every quarter of ``readiness_timeout``, the cause named in
``/readyz``, and :meth:`resumed` ending the worker's backoff once the brokers answer
again; a probe that finds them back reconnects a dropped producer.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import anyio
from aiokafka.errors import KafkaError

from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_progress import (
    INSTANCE_ID_KEY,
    JOURNAL_ID_KEY,
    Position,
    ProgressError,
    Verdict,
    progress_key,
    reconcile,
    transactional_id,
)
from argbridge.errors import SinkError, SinkStopped
from argbridge.journal import JournalRecord
from argbridge.sinks.base import Delivery, Health, RouteBatch, SinkContext, records_of
from argbridge.sinks.kafka import KafkaSink, _describe
from argbridge.sinks.kafka_txn_driver import TransactionDriver
from argbridge.sinks.kafka_txn_progress import ProgressTopic, stable_id
from argbridge.sinks.requeue import RequeueRunner, refresh_dead_letter_gauge


def configured_instance_id(config: KafkaSinkConfig, settings: Settings) -> str | None:
    """The sink's ``instance_id``, else in cluster mode ``cluster.instance_id``: one id per
    instance for its members, records and transactional ids (``None``: the stored one)."""
    if config.instance_id:
        return config.instance_id
    if settings.cluster.enabled and settings.cluster.instance_id:
        return settings.cluster.instance_id
    return None


class ExactlyOnceKafkaSink(TransactionDriver):
    """Transactional delivery to Kafka with the position on a progress topic."""

    reports_sent: Literal[True] = True

    def __init__(self, config: KafkaSinkConfig, ctx: SinkContext, settings: Settings) -> None:
        super().__init__(config, ctx, KafkaSink(config, ctx, settings))
        self.settings = settings
        self.journal_id: str | None = None
        #: This process's incarnation (written into every position it commits).
        self.incarnation = uuid.uuid4().hex
        self.progress = ProgressTopic(config, self.records.topics.admin, ctx.log)
        #: Offset of the last progress record read.
        self._read_offset = -1
        #: The position read back at the last (re)connect.
        self._read: Position | None = None
        self._lock = anyio.Lock()
        self.requeue = RequeueRunner(ctx, settings, self._deliver_requeued)
        #: Started (the cursor aligned, the key claimed): a readiness probe may reconnect.
        self._started = False
        # Readiness is the at-least-once sink's: its probe loop, on its admin client,
        # names the cause; a probe that finds the brokers back reconnects this producer.
        self.records.when_reachable = self._reconnect_when_reachable

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        journal = self.journal
        self.instance_id = configured_instance_id(self.config, self.settings) or await stable_id(
            journal, INSTANCE_ID_KEY
        )
        self.journal_id = await stable_id(journal, JOURNAL_ID_KEY)
        self.transactional_id = transactional_id(
            self.config.transactional_id_prefix, self.instance_id, self.name
        )
        async with self._lock:
            await self.records.ensure_topics()
            if self.producer is not None:  # a start retried after a failure
                await self._drop(self.producer, None)
            await self._connect(first=True)
            try:
                await self._align_cursor()
                await self._claim()
            except BaseException:
                assert self.producer is not None
                await self._drop(self.producer, None)
                raise
            self._started = True
        await refresh_dead_letter_gauge(self.ctx)

    async def aclose(self) -> None:
        self._started = False  # a probe still running must not connect again
        producer, self.producer = self.producer, None
        if producer is not None:
            await self._stop(producer)
        await self._stop_stragglers()
        await self.records.aclose()
        if self.fenced is None:
            self._state = "closed"
        self._ok = False

    def health(self) -> Health:
        cause = self.records.unreachable
        if cause is not None and self.fenced is None:
            return Health(False, f"broker unavailable: {cause}")
        return Health(self._ok and self.producer is not None, self._state)

    async def background(self) -> None:
        """Probe the brokers for readiness; redeliver requeued dead letters (each batch
        in its own transaction)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.records.probe_loop)
            await self.requeue.run()
            tg.cancel_scope.cancel()

    async def resumed(self) -> None:
        """Return once the brokers, seen unreachable at or since this call, answer again
        (:meth:`KafkaSink.resumed`): the worker then retries at once instead of
        finishing its backoff."""
        await self.records.resumed()

    async def next_probe(self) -> None:
        """Return after the next readiness probe recorded its outcome."""
        await self.records.next_probe()

    async def _reconnect_when_reachable(self) -> bool:
        """A readiness probe found the brokers reachable: when the producer was dropped
        (a failed transaction, an outage), reconnect now (fence, read the committed
        position), so ``/readyz`` says ready without waiting for the next batch."""
        if self.producer is not None:
            return True
        if not self._started or self.fenced is not None:
            return False
        async with self._lock:
            if self.producer is None and self._started:
                try:
                    await self._connect()
                except SinkError:  # (SinkStopped too: superseded, the sink says so)
                    return False
                self._refresh_committed()
        return self.producer is not None

    def wake(self) -> None:
        self.requeue.waker.wake()

    # -- connecting: fence, then read the committed position -----------------------------

    async def _connect(self, *, first: bool = False) -> None:
        """Start a producer (fencing earlier incarnations), make sure the progress topic
        exists, read the committed position. Raises :class:`SinkError` (retryable).

        A reconnect (after a failure that was not a fence: a timeout, a lost connection)
        first reads the progress record: when another incarnation wrote it since (a newer
        daemon with this instance id claims the key as it starts), this one was
        superseded and stops instead of fencing the newer one back."""
        if self.fenced is not None:
            raise SinkStopped(self.fenced)
        if not first:
            try:
                with anyio.fail_after(self.config.call_timeout):
                    latest = await self._read_position(stable_only=True)
            except (Exception, TimeoutError) as exc:
                self._fail(exc, "connect")
                raise SinkError(f"kafka: cannot read the progress topic: {_describe(exc)}") from exc
            if (
                latest is not None
                and latest.incarnation not in ("", self.incarnation)
                and self._read_offset > self._own_offset
            ):
                # (Only a record after our own last one counts: during a leader change
                # the stable offset may lag behind our claim.)
                await self._superseded()
        try:
            producer = self._new_producer()
        except (ValueError, KafkaError) as exc:
            self._fail(exc, "configure")
            raise SinkError(f"kafka: cannot create the producer: {_describe(exc)}") from exc
        try:
            with anyio.fail_after(self.config.call_timeout):
                await producer.start()  # InitProducerId: fences, ends the open transaction
                await self.progress.ensure()
                position = await self._read_position()
        except (Exception, TimeoutError) as exc:
            await self._stop(producer)
            self._fail(exc, "connect")
            if isinstance(exc, ProgressError):
                raise SinkError(
                    f"kafka: progress topic {self.config.progress_topic!r}: {exc}"
                ) from exc
            raise SinkError(
                f"kafka: cannot start the transactional producer on {self.config.servers()}:"
                f" {_describe(exc)}"
            ) from exc
        except BaseException:
            await self._stop(producer)
            raise
        self.producer = producer
        self.records.producer_replaced()
        self._read = position
        self._ok = True
        self._state = f"connected to {self.config.servers()} (transactional)"
        self.ctx.log.info(
            "kafka.transactional_connected",
            transactional_id=self.transactional_id,
            position=None if position is None else position.seq,
        )

    async def _read_position(self, *, stable_only: bool = False) -> Position | None:
        """The last committed progress record of this instance and sink (see
        :meth:`ProgressTopic.read`); remembers its offset."""
        assert self.instance_id is not None
        key = progress_key(self.instance_id, self.name)
        position, offset = await self.progress.read(key, stable_only=stable_only)
        if offset >= 0:
            self._read_offset = offset
        return position

    async def _align_cursor(self) -> None:
        """Move the journal cursor to the committed position (start-up only)."""
        assert self.journal_id is not None
        journal, name = self.journal, self.name
        position = self._read
        event_id_at: str | None = None
        if position is not None and position.seq > 0:
            found = await journal.read_after(position.seq - 1, 1)
            if found and found[0].seq == position.seq:
                event_id_at = found[0].event.id
        cursor = journal.cursor(name)
        decision = reconcile(
            position,
            journal_id=self.journal_id,
            last_seq=journal.last_seq,
            cursor=cursor,
            event_id_at=event_id_at,
        )
        self.committed = decision.committed
        log = self.ctx.log
        if decision.verdict in (Verdict.OTHER_JOURNAL, Verdict.DIVERGED):
            log.warning(
                "kafka.progress_ignored", verdict=decision.verdict.value, detail=decision.detail
            )
        else:
            log.info(
                "kafka.progress_resumed", verdict=decision.verdict.value, detail=decision.detail
            )
        if decision.cursor > cursor:
            await journal.ack(name, decision.cursor)
        elif decision.cursor < cursor:
            await journal.rewind(name, decision.cursor)

    # -- delivery ------------------------------------------------------------------------

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        """Produce ``batch`` and the position after it in one transaction."""
        await self._abandon_unconfirmed()
        confirmed = await self.submit(batch)
        await confirmed()

    async def submit(self, batch: Sequence[Delivery]) -> Callable[[], Awaitable[None]]:
        """The first half of :meth:`deliver` (the worker pipelines a backlog): wait
        until the previous transaction is committed, begin this one and hand it every
        record and the position; the returned second half waits for the acks and
        commits. Meanwhile the worker acks the previous batch in the journal and reads
        the next one."""
        async with self._lock:
            await self._previous_done()
            if self.producer is None:
                await self._connect()
                self._refresh_committed()
            pending = self._not_committed(batch)
            if not pending:
                return _nothing  # committed by an attempt whose outcome we did not see
            records = records_of(pending)
            last = max(records, key=_seq)
            assert self.journal_id is not None
            position = Position(self.journal_id, last.seq, last.event.id, self.incarnation)
            txn = await self._begin(pending, position)
        return functools.partial(self._confirm, txn)

    async def _deliver_requeued(self, batch: Sequence[Delivery]) -> None:
        """Requeued dead letters: a transaction of their own; the position stays."""
        async with self._lock:
            await self._previous_done()
            if self.producer is None:
                await self._connect()
                self._refresh_committed()
            committed = self.committed
            if committed is not None:
                committed = dataclasses.replace(committed, incarnation=self.incarnation)
            txn = await self._begin(batch, committed)
        await self._confirm(txn)

    def _refresh_committed(self) -> None:
        """After a reconnect: the position read back covers what an ambiguous commit
        may have committed (never applied across journals)."""
        read = self._read
        if read is not None and read.journal == self.journal_id:
            if self.committed is None or read.seq > self.committed.seq:
                self.committed = read

    def _not_committed(self, batch: Sequence[Delivery]) -> Sequence[Delivery]:
        committed = self.committed
        upto = committed.seq if committed is not None else -1
        skip = self._skip
        if all(r.seq > upto and r.seq not in skip for r in records_of(batch)):
            return batch
        if type(batch) is RouteBatch:
            kept = [r for r in batch.records if r.seq > upto and r.seq not in skip]
            return RouteBatch(kept, batch.route)
        return [d for d in batch if d.record.seq > upto and d.record.seq not in skip]

    async def _claim(self) -> None:
        """At start: commit the position as this incarnation's (see :meth:`_connect`)."""
        assert self.journal_id is not None
        journal = self.journal
        claim = self.committed
        if claim is None:
            cursor = journal.cursor(self.name)
            found = await journal.read_after(cursor - 1, 1) if cursor > 0 else []
            event_id = found[0].event.id if found and found[0].seq == cursor else ""
            claim = Position(self.journal_id, cursor, event_id)
        # (start() holds the lock: begin and confirm directly.)
        txn = await self._begin([], dataclasses.replace(claim, incarnation=self.incarnation))
        await self._confirm(txn)


async def _nothing() -> None:
    return None


def _seq(record: JournalRecord) -> int:
    return record.seq


def build_kafka_sink(
    config: KafkaSinkConfig, ctx: SinkContext, settings: Settings
) -> KafkaSink | ExactlyOnceKafkaSink:
    """The ``kafka`` sink for ``config.delivery``."""
    if config.delivery == "exactly-once":
        return ExactlyOnceKafkaSink(config, ctx, settings)
    return KafkaSink(config, ctx, settings)
