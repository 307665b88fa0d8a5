"""``cluster.webhook_ack = "kafka"``: an inbound webhook's 2xx follows its event's ack
by the Kafka events topic (acks=all), so losing this instance loses nothing acknowledged.

:class:`KafkaAck` implements :class:`~argbridge.cluster.roles.WebhookAcks`. After the
journal commit, the webhook source calls :meth:`KafkaAck.confirm` with the event's id: it
finds the event's journal seq (:meth:`~argbridge.journal.log.EventLog.seq_of`; a retry
whose event is already journaled finds the first delivery's), then waits for
:meth:`~argbridge.cluster.roles.EventsAcked.wait_acked` of that seq, bounded by
``cluster.webhook_ack_timeout`` (on the injected clock). Not acked in time, or Kafka
known unreachable (the producer's readiness probe: then there is no wait):

- ``webhook_fallback_to_journal = false`` (default): :class:`~argbridge.errors.NotAcknowledged`,
  which the source answers 503 + ``Retry-After`` + a problem body. The event stays
  journaled and reaches Kafka once it is back; the sender's retry is a duplicate in the
  journal (same delivery id, same event id) and gets its 200 once the topic has it.
- ``true``: acknowledged after the local commit (``"journal"``): no 503 while Kafka is
  away, but such an event is only as safe as this instance's disk until Kafka has it.

Counted in ``argbridge_cluster_webhook_acks_total{ack="kafka"|"journal"|"refused"}``;
the wait in ``argbridge_cluster_webhook_ack_wait_seconds``.

``cluster.webhook_ack = "journal"`` is :class:`JournalAck`: the 2xx after the local
commit, as outside a cluster. In both modes an event whose record the events topic could
never take (larger than ``max_record_bytes``) is refused before it is journaled
(:meth:`KafkaAck.admits`: the webhook answers 413): in cluster mode Slack and outbound
webhooks are fed from that topic, so such an event would reach none of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from prometheus_client import Counter, Histogram

from argbridge.clock import Clock
from argbridge.cluster.events import refusal
from argbridge.cluster.roles import AckLevel, EventsAcked
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.errors import NotAcknowledged
from argbridge.events import CloudEvent
from argbridge.logging import Throttle, get_logger
from argbridge.metrics import LATENCY_BUCKETS, Metrics

#: An event id's journal seq (``None``: the id is not known to the journal).
SeqOf = Callable[[str], Awaitable[int | None]]


class JournalAck:
    """``webhook_ack = "journal"``: acknowledged after the local commit."""

    def __init__(self, events_config: KafkaSinkConfig) -> None:
        self._events_config = events_config

    def admits(self, event: CloudEvent) -> str | None:
        return refusal(event, self._events_config)

    async def confirm(self, event_id: str) -> AckLevel:
        return "journal"


class KafkaAck:
    """Acknowledge a webhook once the events topic acked its event (see the module)."""

    def __init__(
        self,
        events: EventsAcked,
        seq_of: SeqOf,
        *,
        events_config: KafkaSinkConfig,
        timeout: float,
        fallback: bool,
        unreachable: Callable[[], str | None],
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._events = events
        self._seq_of = seq_of
        self._events_config = events_config
        self.timeout = timeout
        self.fallback = fallback
        self._unreachable = unreachable
        self._clock = clock
        self.log = get_logger(component="cluster", kind="webhook_ack")
        self._throttle = Throttle()
        acks = Counter(
            "argbridge_cluster_webhook_acks",
            "Inbound webhooks acknowledged in cluster mode, by how safe their event was "
            "(kafka: in the events topic; journal: local fallback; refused: answered 503).",
            ["ack"],
            registry=metrics.registry,
        )
        self._kafka, self._journal, self._refused = (
            acks.labels("kafka"),
            acks.labels("journal"),
            acks.labels("refused"),
        )
        self._wait = Histogram(
            "argbridge_cluster_webhook_ack_wait_seconds",
            "Time an inbound webhook waited for the events topic's ack after the journal commit.",
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )

    def admits(self, event: CloudEvent) -> str | None:
        """``None``, or why the events topic could never take ``event`` (too large)."""
        return refusal(event, self._events_config)

    async def confirm(self, event_id: str) -> AckLevel:
        """``"kafka"`` once the events topic acked ``event_id``'s event; ``"journal"``
        (fallback) or :class:`NotAcknowledged` when that does not happen in time."""
        seq = await self._seq_of(event_id)
        events = self._events
        if seq is None or events.acked_seq() >= seq:
            # Unknown: retention forgot it long after every sink (this one too) had it.
            self._kafka.inc()
            self._wait.observe(0.0)
            return "kafka"
        started = self._clock.monotonic()
        down = self._unreachable()
        if down is None and await self._acked_within(seq):
            self._kafka.inc()
            self._wait.observe(self._clock.monotonic() - started)
            return "kafka"
        reason = (
            f"Kafka is unreachable ({down})"
            if down is not None
            else f"the events topic did not acknowledge it within {self.timeout:g}s "
            "(cluster.webhook_ack_timeout)"
        )
        suppressed = self._throttle.allow("not_acked", self._clock.monotonic())
        if suppressed is not None:
            self.log.warning(
                "cluster.webhook_not_acked",
                event_id=event_id,
                seq=seq,
                reason=reason,
                answer="200 after the local commit" if self.fallback else "503",
                suppressed=suppressed,
            )
        if self.fallback:
            self._journal.inc()
            return "journal"
        self._refused.inc()
        raise NotAcknowledged(
            f"the event is journaled, but {reason}; it reaches Kafka later: retry (the "
            "retry is deduplicated)"
        )

    async def _acked_within(self, seq: int) -> bool:
        acked = False
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                nonlocal acked
                await self._events.wait_acked(seq)
                acked = True
                tg.cancel_scope.cancel()

            tg.start_soon(wait)
            await self._clock.sleep(self.timeout)
            tg.cancel_scope.cancel()
        return acked
