"""The ``kafka`` sink with ``delivery = "exactly-once"``: one Kafka transaction per
journal batch, carrying the sink's position on a compacted progress topic.

The pattern of Kafka Connect's exactly-once source connectors (KIP-618) and of
Materialize's Kafka sink. Owns the transactional producer, the progress topic (created
compacted when missing, read back ``read_committed``) and fencing; the records
themselves are built and batched by :class:`~argbridge.sinks.kafka.KafkaSink` (topic
templates, several topics and partitions per batch, binary and structured modes, dead
letters for unroutable or oversized events), which this sink drives inside each
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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordListTooLargeError,
    TransactionalIdAuthorizationFailed,
)

from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_progress import (
    INSTANCE_ID_KEY,
    JOURNAL_ID_KEY,
    Position,
    ProgressError,
    Verdict,
    decode_position,
    encode_position,
    fenced_alert_event,
    progress_key,
    reconcile,
    transactional_id,
)
from argbridge.delivery.kafka_records import partition_for
from argbridge.errors import SinkError, SinkStopped
from argbridge.journal import JournalRecord
from argbridge.sinks.base import Delivery, Health, RouteBatch, SinkContext, records_of
from argbridge.sinks.kafka import _PERMANENT, CLOSE_TIMEOUT, KafkaSink, _describe
from argbridge.sinks.kafka_client import client_kwargs, new_producer
from argbridge.sinks.requeue import RequeueRunner, refresh_dead_letter_gauge

#: The errors that mean another producer took over this ``transactional_id``.
_FENCED = (ProducerFenced, InvalidProducerEpoch)
_TOPIC_EXISTS = 36
#: The transactional producer's retry backoff (see _new_producer).
TXN_RETRY_BACKOFF_MS = 10


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


def configured_instance_id(config: KafkaSinkConfig, settings: Settings) -> str | None:
    """The sink's ``instance_id``, else in cluster mode ``cluster.instance_id``: one id per
    instance for its members, records and transactional ids (``None``: the stored one)."""
    if config.instance_id:
        return config.instance_id
    if settings.cluster.enabled and settings.cluster.instance_id:
        return settings.cluster.instance_id
    return None


class ExactlyOnceKafkaSink:
    """Transactional delivery to Kafka with the position on a progress topic."""

    reports_sent = True

    def __init__(self, config: KafkaSinkConfig, ctx: SinkContext, settings: Settings) -> None:
        self.name = ctx.name
        self.config = config
        self.settings = settings
        self.ctx = ctx
        #: Builds and batches the records (its ``_send``), dead-letters what cannot go.
        self.records = KafkaSink(config, ctx, settings)
        self.producer: AIOKafkaProducer | None = None
        self.instance_id: str | None = None
        self.journal_id: str | None = None
        #: This process's incarnation (written into every position it commits).
        self.incarnation = uuid.uuid4().hex
        #: Offsets of the last progress record read, and of the last one this
        #: incarnation committed.
        self._read_offset = -1
        self._own_offset = -1
        self.transactional_id: str | None = None
        #: The last position committed to Kafka that belongs to this journal.
        self.committed: Position | None = None
        #: Transactions with records committed by this process (tests read it).
        self.commits = 0
        self.fenced: str | None = None
        #: The position read back at the last (re)connect.
        self._read: Position | None = None
        self._lock = anyio.Lock()
        #: Journal seqs dead-lettered after the broker refused them inside a transaction
        #: (the retried transaction leaves them out), and those to send one per batch.
        self._skip: set[int] = set()
        #: The transaction begun and not yet committed (or aborted).
        self._open: _Txn | None = None
        self._progress_partitions: list[int] | None = None
        #: Producer stops still running (see _stop).
        self._stopping: set[asyncio.Future[Any]] = set()
        self._alone: set[int] = set()
        self._state = "not started"
        self._ok = False
        self.requeue = RequeueRunner(ctx, settings, self._deliver_requeued)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        journal = self.ctx.journal
        self.instance_id = configured_instance_id(self.config, self.settings) or await stable_id(
            journal, INSTANCE_ID_KEY
        )
        self.journal_id = await stable_id(journal, JOURNAL_ID_KEY)
        self.transactional_id = transactional_id(
            self.config.transactional_id_prefix, self.instance_id, self.name
        )
        async with self._lock:
            await self.records._ensure_topics()
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
        await refresh_dead_letter_gauge(self.ctx)

    async def aclose(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await self._stop(producer)
        await self._stop_stragglers()
        await self.records.aclose()
        if self.fenced is None:
            self._state = "closed"
        self._ok = False

    def health(self) -> Health:
        return Health(self._ok and self.producer is not None, self._state)

    async def background(self) -> None:
        """Redeliver requeued dead letters (each batch in its own transaction)."""
        await self.requeue.run()

    def wake(self) -> None:
        self.requeue.waker.wake()

    # -- connecting: fence, then read the committed position -----------------------------

    def _new_producer(self) -> AIOKafkaProducer:
        return new_producer(
            self.config,
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=int(self.config.transaction_timeout * 1000),
            # A transaction begun while the previous one's markers are being written
            # is answered CONCURRENT_TRANSACTIONS: retry soon, not after aiokafka's
            # default 100 ms (the Java client special-cases 20 ms for this).
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )

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
                await self._ensure_progress_topic()
                position = await self._read_position()
        except (Exception, TimeoutError) as exc:
            await self._stop(producer)
            self._fail(exc, "connect")
            if isinstance(exc, ProgressError):
                raise SinkError(
                    f"kafka: progress topic {self.config.progress_topic!r}: {exc}"
                ) from exc
            raise SinkError(
                f"kafka: cannot start the transactional producer on {self.records._servers()}:"
                f" {_describe(exc)}"
            ) from exc
        except BaseException:
            await self._stop(producer)
            raise
        self.producer = producer
        self.records._topics.clear()
        self.records._inflight.clear()
        self._read = position
        self._ok = True
        self._state = f"connected to {self.records._servers()} (transactional)"
        self.ctx.log.info(
            "kafka.transactional_connected",
            transactional_id=self.transactional_id,
            position=None if position is None else position.seq,
        )

    async def _ensure_progress_topic(self) -> None:
        """Create the progress topic (one partition, compacted) when it is missing."""
        c = self.config
        admin = await self.records._admin_client()
        if c.progress_topic in await admin.list_topics():
            return
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = min(3, brokers)
        topic = NewTopic(
            c.progress_topic,
            num_partitions=1,
            replication_factor=replication,
            topic_configs={
                "cleanup.policy": "compact",
                "min.insync.replicas": str(min(2, replication)),
            },
        )
        response = await admin.create_topics([topic], timeout_ms=int(c.request_timeout * 1000))
        for entry in response.topic_errors:
            code = entry[1]
            if code not in (0, _TOPIC_EXISTS):
                message = entry[2] if len(entry) > 2 and entry[2] else f"error {code}"
                raise SinkError(f"kafka: cannot create the progress topic: {message}")
        self.ctx.log.info("kafka.progress_topic_created", topic=c.progress_topic)

    async def _read_position(self, *, stable_only: bool = False) -> Position | None:
        """The last committed progress record of this instance and sink (read_committed),
        read up to the high watermark as it was after the fence."""
        assert self.instance_id is not None
        c = self.config
        key = progress_key(self.instance_id, self.name)
        admin = await self.records._admin_client()
        while True:  # (a topic just created may not list its partitions yet)
            described = await admin.describe_topics([c.progress_topic])
            partitions = sorted(p["partition"] for t in described for p in t["partitions"])
            if partitions:
                break
            await anyio.sleep(0.05)
        tp = TopicPartition(c.progress_topic, partition_for(key, partitions, ""))
        consumer = _consumer(c, "read_committed")
        try:
            await consumer.start()
            consumer.assign([tp])
            if stable_only:
                # Before our own InitProducerId: a transaction of ours left open would
                # hold the last stable offset back for good; read up to it.
                high = int((await consumer.end_offsets([tp]))[tp])
            else:
                high = await _high_watermark(c, tp)
            await consumer.seek_to_beginning(tp)
            found: bytes | None = None
            seen = False
            while await consumer.position(tp) < high:
                batch = await consumer.getmany(tp, timeout_ms=200)
                for msg in batch.get(tp, ()):
                    if msg.key == key:
                        found, seen = msg.value, True
                        self._read_offset = msg.offset
            return decode_position(found) if seen else None
        finally:
            await _close_consumer(consumer)

    async def _align_cursor(self) -> None:
        """Move the journal cursor to the committed position (start-up only)."""
        assert self.journal_id is not None
        journal, name = self.ctx.journal, self.name
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

    async def _previous_done(self) -> None:
        """Wait for the open transaction's commit (its ``confirmed()`` runs in the
        worker's confirming task); one nobody commits within ``call_timeout`` is
        aborted (the producer dropped)."""
        txn = self._open
        if txn is None:
            return
        with anyio.move_on_after(self.config.call_timeout):
            await txn.done.wait()
        if self._open is txn:
            self._open = None
            await self._drop(txn.producer, None)

    async def _abandon_unconfirmed(self) -> None:
        """The worker calls ``deliver`` only with no pipeline running: an open
        transaction whose ``confirmed()`` never started was abandoned (the pipeline
        failed after submitting it). Abort it now (drop the producer) rather than wait."""
        txn = self._open
        if txn is not None and not txn.confirming:
            self._open = None
            txn.done.set()
            await self._drop(txn.producer, None)

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

    async def _transaction(self, batch: Sequence[Delivery], position: Position | None) -> None:
        """One whole transaction (tests)."""
        async with self._lock:
            await self._previous_done()
            txn = await self._begin(batch, position)
        await self._confirm(txn)

    async def _begin(self, batch: Sequence[Delivery], position: Position | None) -> _Txn:
        """Begin a transaction and hand it ``batch`` and the progress record."""
        producer = self.producer
        assert producer is not None and self.instance_id is not None
        c = self.config
        txn = _Txn(producer, position, anyio.current_time() + c.call_timeout)
        send = self.records._send
        futures = txn.futures
        try:
            with anyio.CancelScope(deadline=txn.deadline) as scope:
                await producer.begin_transaction()
                self._open = txn
                if position is not None:
                    # The progress record first: its partition joins the transaction
                    # with the data's (one AddPartitionsToTxn round trip, not two).
                    value = encode_position(
                        position,
                        instance_id=self.instance_id,
                        sink=self.name,
                        at=self.ctx.clock.time(),
                    )
                    key = progress_key(self.instance_id, self.name)
                    partitions = self._progress_partitions
                    if partitions is None:
                        partitions = sorted(await producer.partitions_for(c.progress_topic))
                        self._progress_partitions = partitions
                    fut = await producer.send(
                        c.progress_topic,
                        value=value,
                        key=key,
                        partition=partition_for(key, partitions, ""),
                    )
                    futures.append((fut, [], c.progress_topic))
                alone = self._alone
                if alone and any(r.seq in alone for r in records_of(batch)):
                    # Records of a batch the broker refused as too large: one per batch.
                    txn.sent = await send(
                        producer, [d for d in batch if d.record.seq not in alone], futures
                    )
                    for d in batch:
                        if d.record.seq in alone:
                            txn.sent += await send(producer, [d], futures)
                else:
                    txn.sent = await send(producer, batch, futures)
                txn.sent_at = time.perf_counter()
            if scope.cancelled_caught:
                raise TimeoutError
        except BaseException as exc:
            await self._failed(txn, exc)
            raise AssertionError("unreachable") from exc  # _failed always raises
        return txn

    async def _confirm(self, txn: _Txn) -> None:
        """Wait for the transaction's acks and commit it."""
        txn.confirming = True
        producer, position = txn.producer, txn.position
        try:
            if self.producer is not txn.producer:
                raise SinkError("kafka: the transaction was aborted (producer replaced)")
            with anyio.CancelScope(deadline=txn.deadline) as scope:
                for fut, members, topic in txn.futures:
                    await asyncio.wait((fut,))
                    error = fut.exception()
                    if error is None:
                        continue
                    if isinstance(error, _PERMANENT) and members:
                        txn.refused.append((members, topic, error))
                    elif not txn.refused:
                        raise error
                    # (else a knock-on failure of the doomed transaction, e.g. the
                    # sequence gap the refused batch left: the retry starts afresh.)
                if txn.refused:
                    raise _RefusedInTransaction()
                if position is not None:
                    # (Tests kill the daemon on this line: inside an open transaction.)
                    self.ctx.log.debug("kafka.committing", seq=position.seq)
                acked_at = time.perf_counter()
                await producer.commit_transaction()
            if scope.cancelled_caught:
                raise TimeoutError
        except BaseException as exc:
            await self._failed(txn, exc)
        finally:
            if self._open is txn:
                self._open = None
            txn.done.set()
        for fut, members, _topic in txn.futures:
            if not members and fut.done() and fut.exception() is None:
                self._own_offset = max(self._own_offset, fut.result().offset)
        if txn.sent:  # (the start-up claim carries no records)
            self.commits += 1
        self.ctx.count_sent(txn.sent)
        if position is not None:
            if self.committed is None or position.seq > self.committed.seq:
                self.committed = position
            # (Tests kill the daemon on this line: between the commit and the cursor.)
            self.ctx.log.debug(
                "kafka.committed",
                seq=position.seq,
                events=len(txn.sent),
                ack_ms=round((acked_at - txn.sent_at) * 1000, 2),
                commit_ms=round((time.perf_counter() - acked_at) * 1000, 2),
            )

    async def _failed(self, txn: _Txn, exc: BaseException) -> NoReturn:
        """A transaction failed: drop the producer (its open transaction is aborted by
        the next one's InitProducerId) and raise what the worker should see."""
        producer = txn.producer
        if self._open is txn:
            self._open = None
        txn.done.set()
        if isinstance(exc, _RefusedInTransaction):
            await self._drop(producer, None)
            await self._refused(txn.refused)
            raise SinkError(
                "kafka: the broker refused records (dead-lettered); the transaction is "
                "retried without them"
            ) from None
        fenced = _fenced_cause(txn, exc)
        if fenced is not None:
            await self._fenced(producer, fenced)
        if isinstance(exc, TransactionalIdAuthorizationFailed):
            await self._drop(producer, exc)
            raise SinkStopped(
                f"kafka: not authorized to use transactional_id {self.transactional_id!r}"
                " (grant WRITE and DESCRIBE on it)"
            ) from exc
        if isinstance(exc, KafkaError | OSError | TimeoutError):
            await self._drop(producer, exc)
            raise SinkError(f"kafka: transaction failed: {_describe(exc)}") from exc
        # Cancelled (shutdown), a SinkError of ours, or a bug: the open transaction must
        # not linger.
        await self._drop(producer, None)
        raise exc

    async def _refused(self, refused: list[tuple[list[JournalRecord], str, BaseException]]) -> None:
        """Records in batches the broker refused for good: a batch of several too large
        records is split (each goes alone next time); the rest are dead-lettered and
        left out of the retried transaction."""
        for members, _topic, exc in refused:
            too_large = isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError)
            if too_large and len(members) > 1:
                self._alone.update(r.seq for r in members)
                continue
            reason = f"refused by the broker: {_describe(exc)}"
            for record in members:
                await self.records._dead_letter(record, reason)
                self._skip.add(record.seq)
                self._alone.discard(record.seq)

    async def _claim(self) -> None:
        """At start: commit the position as this incarnation's (see :meth:`_connect`)."""
        assert self.journal_id is not None
        journal = self.ctx.journal
        claim = self.committed
        if claim is None:
            cursor = journal.cursor(self.name)
            found = await journal.read_after(cursor - 1, 1) if cursor > 0 else []
            event_id = found[0].event.id if found and found[0].seq == cursor else ""
            claim = Position(self.journal_id, cursor, event_id)
        # (start() holds the lock: begin and confirm directly.)
        txn = await self._begin([], dataclasses.replace(claim, incarnation=self.incarnation))
        await self._confirm(txn)

    async def _superseded(self) -> NoReturn:
        """Another incarnation wrote this key's progress since: stop, as when fenced."""
        await self._fenced(None, SinkError("superseded by a newer incarnation"))

    async def _fenced(self, producer: AIOKafkaProducer | None, exc: BaseException) -> NoReturn:
        """Another producer took this transactional_id: stop for good, alert."""
        if producer is not None:
            await self._drop(producer, exc)
        reason = (
            f"kafka: fenced: another argbridge with instance id {self.instance_id!r} and "
            f"sink {self.name!r} (transactional_id {self.transactional_id!r}) took over; "
            "this sink stops (give each instance its own instance_id)"
        )
        self.fenced = reason
        self._state = reason
        self.ctx.log.error(
            "kafka.fenced", transactional_id=self.transactional_id, instance_id=self.instance_id
        )
        try:
            await self.ctx.journal.alert(
                fenced_alert_event(
                    self.name,
                    self.instance_id or "",
                    self.transactional_id or "",
                    at=self.ctx.clock.time(),
                )
            )
        except Exception as alert_exc:  # the journal may be closing; the log says it all
            self.ctx.log.warning("kafka.fenced_alert_failed", error=alert_exc)
        raise SinkStopped(reason) from exc

    async def _drop(self, producer: AIOKafkaProducer, exc: BaseException | None) -> None:
        if exc is not None:
            self._fail(exc, "transaction")
        if self.producer is producer:
            self.producer = None
        await self._stop(producer)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer``, waiting a bounded time. Against a frozen broker aiokafka's
        stop does not end (and a second call is a no-op): it keeps running as a task and
        closes the connections once the broker answers again; :meth:`aclose` gives the
        stragglers one more bounded wait, then cancels them."""
        task = asyncio.ensure_future(producer.stop())
        task.add_done_callback(self._stopped)
        self._stopping.add(task)
        with anyio.CancelScope(shield=True):
            await asyncio.wait((task,), timeout=min(CLOSE_TIMEOUT, self.config.call_timeout))

    def _stopped(self, task: asyncio.Future[Any]) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.ctx.log.debug("kafka.stop_failed", error=task.exception())

    async def _stop_stragglers(self) -> None:
        if self._stopping:
            with anyio.CancelScope(shield=True):
                await asyncio.wait(tuple(self._stopping), timeout=CLOSE_TIMEOUT)
            for task in tuple(self._stopping):
                task.cancel()

    def _fail(self, exc: BaseException, during: str) -> None:
        self._ok = False
        if self.fenced is None:
            self._state = f"broker unavailable ({during}): {_describe(exc)}"


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


def _fenced_cause(txn: _Txn, exc: BaseException) -> BaseException | None:
    """The fencing behind ``exc``: aiokafka's sender learns it in the background and
    fails the transaction's pending records with ``ProducerFenced``; a send made after
    that raises ``IllegalOperation`` ("not in transaction") instead. Either way this
    incarnation must stop, never reconnect (that would fence the newer one back)."""
    if _is_fenced(exc):
        return exc
    for fut, _, _ in txn.futures:
        if fut.done() and not fut.cancelled():
            error: BaseException | None = fut.exception()
            if error is not None and _is_fenced(error):
                return error
    return None


def _is_fenced(exc: BaseException) -> bool:
    return isinstance(exc, _FENCED)


async def _nothing() -> None:
    return None


@dataclass(eq=False)
class _Txn:
    """An open transaction: what was handed to it, and whether it is being committed."""

    producer: AIOKafkaProducer
    position: Position | None
    deadline: float
    futures: list[tuple[Any, list[JournalRecord], str]] = field(default_factory=list)
    refused: list[tuple[list[JournalRecord], str, BaseException]] = field(default_factory=list)
    sent: list[JournalRecord] = field(default_factory=list)
    sent_at: float = 0.0
    confirming: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)


class _RefusedInTransaction(Exception):
    """The broker refused some records for good: abort, dead-letter them, retry."""


def _seq(record: JournalRecord) -> int:
    return record.seq


def build_kafka_sink(
    config: KafkaSinkConfig, ctx: SinkContext, settings: Settings
) -> KafkaSink | ExactlyOnceKafkaSink:
    """The ``kafka`` sink for ``config.delivery``."""
    if config.delivery == "exactly-once":
        return ExactlyOnceKafkaSink(config, ctx, settings)
    return KafkaSink(config, ctx, settings)
