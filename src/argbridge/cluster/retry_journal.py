"""Kafka's side of cluster-mode delivery: retry topics made and written, and the journal
role a cluster-fed sink gets.

- :func:`ensure_topics`: creates missing topics (the events topic, a sink's retry tiers),
  replication capped by the broker count; one made meanwhile by another instance is fine;
- :class:`RetryProducer`: puts a delayed retry on the retry topic of its next attempt
  (:mod:`argbridge.cluster.retry_topics`), acks=all, idempotent;
- :class:`RetryTopicJournal`: the local journal's sink role, except that a scheduled retry
  goes to Kafka (so the webhook sink's own retry schedule runs through retry topics
  unchanged, and a retry survives the instance that scheduled it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from argbridge.cluster.retry_topics import RetryTopics, retry_headers
from argbridge.config.cluster import ClusterConfig
from argbridge.delivery.kafka_records import build_record
from argbridge.errors import SinkError
from argbridge.events import CloudEvent
from argbridge.journal import JournalRecord, RetryItem
from argbridge.journal.roles import SinkJournal, SinkJournalOverlay
from argbridge.sinks.kafka_client import (
    broker_count,
    client_kwargs,
    create_topics,
    describe,
    new_admin,
    wait_until_led,
)

CLOSE_TIMEOUT = 10.0


async def ensure_topics(
    cluster: ClusterConfig, topics: Sequence[str], partitions: int, log: Any
) -> None:
    """Create the missing ``topics`` (replication capped by the broker count; one made
    meanwhile by another instance is fine), then wait until every one of them has a leader
    for each partition (bounded by ``request_timeout``): the delivery consumer subscribes
    right after, and a group assigned while a topic was not in its leader's metadata yet
    gave one instance no partitions at all until a metadata refresh minutes later (three
    instances starting together in tests/cluster/test_delivery_e2e.py)."""
    admin = new_admin(cluster)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            await _create(admin, cluster, missing, partitions, log)
        await wait_until_led(admin, topics, cluster.request_timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise SinkError(f"kafka: cannot check topics: {describe(exc)}") from exc
    finally:
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            with contextlib.suppress(Exception):
                await admin.close()


async def _create(
    admin: AIOKafkaAdminClient,
    cluster: ClusterConfig,
    missing: list[str],
    partitions: int,
    log: Any,
) -> None:
    rf = max(1, min(cluster.replication_factor, await broker_count(admin)))
    if rf < cluster.replication_factor:
        log.warning("delivery.replication_capped", wanted=cluster.replication_factor, brokers=rf)
    failed = await create_topics(
        admin, [NewTopic(t, partitions, rf) for t in missing], cluster.request_timeout
    )
    if failed:
        raise SinkError(f"kafka: cannot create topics: {'; '.join(failed)}")
    log.info("delivery.topics_created", topics=missing, partitions=partitions, rf=rf)


class RetryProducer:
    """Produces delayed retries to a sink's retry topics (acks=all, idempotent)."""

    def __init__(self, cluster: ClusterConfig, topics: RetryTopics, client_id: str) -> None:
        self.cluster = cluster
        self.topics = topics
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **{**client_kwargs(self.cluster), "client_id": self.client_id},
                acks="all",
                enable_idempotence=True,
            )
            try:
                await producer.start()
            except BaseException:
                with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await producer.stop()
                raise
            self._producer = producer

    async def schedule(
        self, event: CloudEvent, attempts_made: int, due_at: float, error: str
    ) -> str:
        """Put ``event`` on the retry topic of its next attempt; returns the topic.
        :class:`SinkError` when Kafka does not take it."""
        if self._producer is None:
            raise SinkError("kafka: the retry producer is not started")
        topic = self.topics.topic_for(attempts_made)
        record = build_record(event, topic)
        if record.key is None:  # keyless: the id keeps every copy on one partition
            record = type(record)(topic, event.id.encode(), record.value, record.headers)
        headers = retry_headers(record.headers, attempts_made, due_at, error)
        try:
            await self._producer.send_and_wait(topic, record.value, key=record.key, headers=headers)
        except (KafkaError, OSError) as exc:
            raise SinkError(f"kafka: cannot schedule a retry: {describe(exc)}") from exc
        return topic

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                with contextlib.suppress(Exception):
                    await producer.stop()


class RetryTopicJournal(SinkJournalOverlay):
    """The :class:`~argbridge.journal.roles.SinkJournal` a cluster-fed sink gets: the
    local journal's role, except that a scheduled retry goes to a Kafka retry topic (and
    leaves the local retry table, where ``argbridge dlq replay`` puts requeued dead
    letters). Dead letters, state (Slack thread ids, a disabled endpoint) and requeued
    items stay local."""

    def __init__(self, local: SinkJournal, retries: RetryProducer) -> None:
        super().__init__(local)
        self.retries = retries
        #: Told of each retry scheduled (the delivery consumer counts and logs them).
        self.on_scheduled: Callable[[CloudEvent, int, float], None] | None = None

    async def schedule_retry(
        self, sink: str, record: JournalRecord | RetryItem, attempt: int, due_at: float, error: str
    ) -> None:
        await self.retries.schedule(record.event, attempt, due_at, error)
        if self.on_scheduled is not None:
            self.on_scheduled(record.event, attempt, due_at)
        if isinstance(record, RetryItem):  # a requeued dead letter: it lives in Kafka now
            await self.inner.clear_retry(sink, record.event.id)
