"""The internal events topic: every journaled event produced to Kafka, and its progress.

In cluster mode every event the journal accepts (data and argbridge's own ops and alert
events, whatever the user's routes say) is produced to ``cluster.events_topic_name`` by
an internal sink, :data:`EVENTS_SINK`, with its own journal cursor. It is the Kafka sink
(:class:`~argbridge.sinks.kafka.KafkaSink`) driven by a
:class:`~argbridge.sinks.base.SinkWorker`, configured from ``[cluster]``
(:func:`events_sink_config`): the connection keys (bootstrap servers, TLS, SASL),
``acks = "all"``, the idempotent producer, CloudEvents binary mode (what the fan-out
consumers decode with the same codec). A record's key is the event's ``partitionkey``
(the normalizers set it to the run or incident), else its subject, else its id, so one
run's events share a partition and keep their order.

The topic is created at start when missing (:func:`ensure_events_topic`) with
``events_partitions`` and ``replication_factor``, the latter capped by the broker count
with a warning. The sink's start fails and is retried with backoff while Kafka cannot be
reached: the journal absorbs the backlog meanwhile, and that cursor holds retention, so
nothing accepted is deleted before the events topic has it.

:class:`EventsProducer` implements :class:`~argbridge.cluster.roles.EventsAcked`: its
acked seq is the sink's journal cursor, which the worker moves only after Kafka acked the
batch (acks=all); :meth:`EventsProducer.wait_acked` wakes on each such ack (the journal
role the worker gets announces them, :class:`AckingJournal`), never by polling. A record
Kafka refuses for good (over ``max_record_bytes``) is dead-lettered by the sink and its
seq counts as acked: that event is in ``argbridge dlq``, not in the topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from argbridge.backoff import Backoff
from argbridge.clock import Clock
from argbridge.config.cluster import ClusterConfig
from argbridge.config.kafka import KafkaClientConfig
from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_records import build_record
from argbridge.errors import SinkError
from argbridge.events import CloudEvent
from argbridge.journal.roles import SinkJournal, SinkJournalOverlay
from argbridge.metrics import Metrics
from argbridge.router import Router
from argbridge.sinks import kafka_client
from argbridge.sinks.base import Delivery, Health, SinkContext, SinkWorker
from argbridge.sinks.kafka import KafkaSink

#: The internal sink's name: its journal cursor, its metrics' ``component`` label. Not a
#: name a ``[sinks]`` table can take in cluster mode (checked at start).
EVENTS_SINK = "cluster:events"


def events_sink_config(cluster: ClusterConfig) -> KafkaSinkConfig:
    """The Kafka sink configuration of the events producer, from ``[cluster]``."""
    connection = {name: getattr(cluster, name) for name in KafkaClientConfig.model_fields}
    return KafkaSinkConfig.model_validate(
        {
            **connection,
            "type": "kafka",
            "topic": cluster.events_topic_name,
            "acks": "all",
            "enable_idempotence": True,
            "mode": "binary",
            # The topic is made by ensure_events_topic (replication capped by brokers).
            "create_topics": False,
            "topic_partitions": cluster.events_partitions,
            "topic_replication_factor": cluster.replication_factor,
            # Caught up, a new event is read at once: a webhook's 2xx waits for its ack.
            "read_linger": 0.0,
        }
    )


def record_size(event: CloudEvent, topic: str) -> int:
    """The size of ``event``'s record on the events topic, as the producer counts it
    against ``max_record_bytes`` (binary mode, the key with its fallbacks)."""
    record = build_record(event, topic, "binary")
    size = record.size
    if record.key is None:
        size += len((event.subject or event.id).encode())
    return size


def refusal(event: CloudEvent, config: KafkaSinkConfig) -> str | None:
    """``None``, or why the events topic can never take ``event`` (too large)."""
    size = record_size(event, config.topic)
    if size <= config.max_record_bytes:
        return None
    return (
        f"the event's record for the cluster events topic is {size} bytes, more than the "
        f"{config.max_record_bytes} it takes (max_record_bytes; the broker's "
        "message.max.bytes): it could never reach Kafka"
    )


async def ensure_events_topic(config: KafkaSinkConfig, log: Any) -> None:
    """Create the events topic unless it exists: ``topic_partitions`` partitions,
    ``topic_replication_factor`` replicas capped by the brokers in the cluster (with a
    warning). Bounded by ``call_timeout``; raises :class:`SinkError` naming the cause."""
    topic = config.topic
    admin = kafka_client.new_admin(config)
    try:
        with anyio.fail_after(config.call_timeout):
            await admin.start()
            if topic in set(await admin.list_topics()):
                return
            brokers = await kafka_client.broker_count(admin)
            replication = min(config.topic_replication_factor, brokers)
            if replication < config.topic_replication_factor:
                log.warning(
                    "cluster.replication_capped",
                    topic=topic,
                    key="cluster.replication_factor",
                    configured=config.topic_replication_factor,
                    brokers=brokers,
                )
            failed = await kafka_client.create_topics(
                admin,
                [NewTopic(topic, config.topic_partitions, replication)],
                config.request_timeout,
            )
    except (KafkaError, OSError, TimeoutError) as exc:
        raise SinkError(
            f"cluster: cannot create the events topic {topic!r}: {kafka_client.describe(exc)}"
        ) from exc
    finally:
        with anyio.move_on_after(5.0, shield=True):
            try:
                await admin.close()
            except Exception as exc:
                log.debug("kafka.admin_close_failed", error=exc)
    if failed:
        raise SinkError(f"cluster: cannot create the events topic: {failed[0]}")
    log.info(
        "cluster.events_topic_created",
        topic=topic,
        partitions=config.topic_partitions,
        replication_factor=replication,
    )


class EventsSink:
    """The Kafka sink of the events topic, which it creates at start when missing."""

    reports_sent = True

    def __init__(self, cluster: ClusterConfig, ctx: SinkContext, settings: Settings) -> None:
        self.name = ctx.name
        self.config = events_sink_config(cluster)
        self.ctx = ctx
        self.kafka = KafkaSink(self.config, ctx, settings, key_fallback=True)
        self._topic_ready = False

    async def start(self) -> None:
        if not self._topic_ready:
            await ensure_events_topic(self.config, self.ctx.log)
            self._topic_ready = True
        await self.kafka.start()

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        await self.kafka.deliver(batch)

    async def submit(self, batch: Sequence[Delivery]) -> Callable[[], Awaitable[None]]:
        return await self.kafka.submit(batch)

    async def background(self) -> None:
        await self.kafka.background()

    async def resumed(self) -> None:
        await self.kafka.resumed()

    async def aclose(self) -> None:
        await self.kafka.aclose()

    def health(self) -> Health:
        return self.kafka.health()

    @property
    def unreachable(self) -> str | None:
        """Why the brokers cannot be reached, as the last probe found (``None``: they
        answered, or no probe ran yet)."""
        return self.kafka.unreachable


class AckingJournal(SinkJournalOverlay):
    """A :class:`SinkJournal` that calls ``on_ack`` after each ack moved the cursor
    (everything else is the wrapped role's)."""

    def __init__(self, inner: SinkJournal, on_ack: Callable[[], None]) -> None:
        super().__init__(inner)
        self._on_ack = on_ack

    async def ack(self, sink: str, seq: int, *, behind: bool = False) -> None:
        await self.inner.ack(sink, seq, behind=behind)
        self._on_ack()


class EventsProducer:
    """The events-topic producer: its worker and sink, and what Kafka acked so far
    (:class:`~argbridge.cluster.roles.EventsAcked`)."""

    def __init__(
        self,
        settings: Settings,
        journal: SinkJournal,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        cluster = settings.cluster
        self._journal = AckingJournal(journal, self._announce)
        self._acked = anyio.Event()
        ctx = SinkContext(EVENTS_SINK, self._journal, metrics, clock)
        self.sink = EventsSink(cluster, ctx, settings)
        cfg = self.sink.config
        # No routes and no [ops] routes: one route takes every event, ops events too.
        self.worker = SinkWorker(
            self.sink,
            ctx,
            Router([], [EVENTS_SINK]),
            batch_size=cfg.batch_size,
            batch_bytes=cfg.batch_bytes,
            linger=cfg.read_linger,
            backoff=Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
        )

    # -- EventsAcked -------------------------------------------------------------------

    def acked_seq(self) -> int:
        """The highest journal seq such that it and every seq before it is acked."""
        return self._journal.cursor(EVENTS_SINK)

    async def wait_acked(self, seq: int) -> None:
        """Return once :meth:`acked_seq` is at least ``seq`` (callers bound the wait)."""
        while self.acked_seq() < seq:
            await self._acked.wait()

    def _announce(self) -> None:
        self._acked.set()
        self._acked = anyio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Produce journaled events until :meth:`stop` (then the batch in flight is
        finished) or cancellation."""
        await self.worker.run()

    def stop(self) -> None:
        self.worker.stop()

    async def aclose(self) -> None:
        await self.sink.aclose()

    def health(self) -> Health:
        if not self.worker.started:
            return Health(False, self.worker.last_error or "starting")
        return self.sink.health()

    @property
    def unreachable(self) -> str | None:
        """Why Kafka cannot be reached (the sink's last probe), else ``None``."""
        return self.sink.unreachable
