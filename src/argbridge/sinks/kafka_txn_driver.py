"""The transaction driver of the exactly-once Kafka sink: one Kafka transaction's life.

Owns :class:`TransactionDriver`, the base of
:class:`~argbridge.sinks.kafka_txn.ExactlyOnceKafkaSink`: the transactional producer
(made with a short retry backoff, stopped within a bound even against a frozen broker),
the open transaction (:class:`Txn`), and each step of it: ``begin`` → the progress record
first (its partition joins the transaction with the data's) → the batch's records (any
topics and partitions, built by :class:`~argbridge.sinks.kafka.KafkaSink`; records of a
batch the broker refused as too large go one per batch) → wait for every ack →
``commit``, the whole transaction bounded by ``call_timeout``.

A failure is classified once (:meth:`TransactionDriver._failed`): records the broker
refused for good are dead-lettered (or split) and the transaction retried without them;
a fence stops the sink for good (:mod:`.kafka_txn_fencing`); a transactional id the
broker refuses stops it with the grants to give; a timeout, a lost connection or a
Kafka error drops the producer (the next ``InitProducerId`` aborts the open
transaction) and is a retryable :class:`~argbridge.errors.SinkError`; a cancellation or
a bug drops the producer too, so no transaction lingers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TransactionalIdAuthorizationFailed,
)

from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_progress import Position, encode_position, progress_key
from argbridge.delivery.kafka_records import partition_for
from argbridge.errors import SinkError, SinkStopped
from argbridge.journal import JournalRecord
from argbridge.journal.roles import ExactlyOnceSinkJournal
from argbridge.sinks.base import Delivery, SinkContext, records_of
from argbridge.sinks.kafka import _PERMANENT, CLOSE_TIMEOUT, KafkaSink, _describe
from argbridge.sinks.kafka_client import ProducerStops, new_producer
from argbridge.sinks.kafka_txn_fencing import alert_fenced, fenced_cause, fenced_reason

#: The transactional producer's retry backoff (see _new_producer).
TXN_RETRY_BACKOFF_MS = 10


@dataclass(eq=False)
class Txn:
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


class TransactionDriver:
    """Begins, fills, confirms and commits transactions on one transactional producer."""

    def __init__(self, config: KafkaSinkConfig, ctx: SinkContext, records: KafkaSink) -> None:
        self.name = ctx.name
        self.config = config
        self.ctx = ctx
        journal = ctx.journal
        if not isinstance(journal, ExactlyOnceSinkJournal):
            raise TypeError(
                "the exactly-once Kafka sink needs the journal's exactly-once sink role "
                "(registry.sink_journal, Journal.for_exactly_once_sink)"
            )
        #: The exactly-once sink role: reconciliation (rewind, last_seq) and alerts.
        self.journal = journal
        #: Builds and batches the records (its ``send``), dead-letters what cannot go.
        self.records = records
        self.producer: AIOKafkaProducer | None = None
        self.instance_id: str | None = None
        self.transactional_id: str | None = None
        #: The last position committed to Kafka that belongs to this journal.
        self.committed: Position | None = None
        #: Transactions with records committed by this process (tests read it).
        self.commits = 0
        self.fenced: str | None = None
        #: Offset of the last progress record this incarnation committed.
        self._own_offset = -1
        #: Journal seqs dead-lettered after the broker refused them inside a transaction
        #: (the retried transaction leaves them out), and those to send one per batch.
        self._skip: set[int] = set()
        self._alone: set[int] = set()
        #: The transaction begun and not yet committed (or aborted).
        self._open: Txn | None = None
        self._progress_partitions: list[int] | None = None
        #: Producer stops still running (see _stop).
        self._stops = ProducerStops(ctx.log)
        self._state = "not started"
        self._ok = False

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

    # -- one transaction -----------------------------------------------------------------

    async def _begin(self, batch: Sequence[Delivery], position: Position | None) -> Txn:
        """Begin a transaction and hand it ``batch`` and the progress record."""
        producer = self.producer
        assert producer is not None and self.instance_id is not None
        c = self.config
        txn = Txn(producer, position, anyio.current_time() + c.call_timeout)
        send = self.records.send
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

    async def _confirm(self, txn: Txn) -> None:
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

    # -- failures ------------------------------------------------------------------------

    async def _failed(self, txn: Txn, exc: BaseException) -> NoReturn:
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
        fenced = fenced_cause(txn.futures, exc)
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
                await self.records.dead_letter(record, reason)
                self._skip.add(record.seq)
                self._alone.discard(record.seq)

    async def _superseded(self) -> NoReturn:
        """Another incarnation wrote this key's progress since: stop, as when fenced."""
        await self._fenced(None, SinkError("superseded by a newer incarnation"))

    async def _fenced(self, producer: AIOKafkaProducer | None, exc: BaseException) -> NoReturn:
        """Another producer took this transactional_id: stop for good, alert."""
        if producer is not None:
            await self._drop(producer, exc)
        reason = fenced_reason(self.instance_id, self.name, self.transactional_id)
        self.fenced = reason
        self._state = reason
        await alert_fenced(self.ctx, self.journal, self.instance_id, self.transactional_id)
        raise SinkStopped(reason) from exc

    def _fail(self, exc: BaseException, during: str) -> None:
        self._ok = False
        if self.fenced is None:
            self._state = f"broker unavailable ({during}): {_describe(exc)}"

    # -- stopping the producer (bounded) -------------------------------------------------

    async def _drop(self, producer: AIOKafkaProducer, exc: BaseException | None) -> None:
        if exc is not None:
            self._fail(exc, "transaction")
        if self.producer is producer:
            self.producer = None
        await self._stop(producer)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer`` within a bound, without abandoning it (:class:`ProducerStops`:
        :meth:`_stop_stragglers` finishes what is left)."""
        await self._stops.stop(producer, min(CLOSE_TIMEOUT, self.config.call_timeout))

    async def _stop_stragglers(self) -> None:
        await self._stops.finish(CLOSE_TIMEOUT)
