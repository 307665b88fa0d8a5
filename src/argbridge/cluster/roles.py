"""The narrow roles cluster mode's parts hand one another.

:class:`EventsAcked` is the internal events-topic producer's progress as the others see
it: stream positions are recorded on the control topic only once the events before them
are acked there (handover without loss), and with ``cluster.webhook_ack = "kafka"`` a
webhook's 2xx waits for its event's ack.

:class:`WebhookAcks` is what an inbound webhook source waits on before its 2xx in cluster
mode (``cluster.webhook_ack = "kafka"``; see :mod:`argbridge.cluster.webhook_ack`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from argbridge.events import CloudEvent

#: How safe an acknowledged event is: in the Kafka events topic (acks=all), or only in
#: this instance's journal (``webhook_fallback_to_journal``).
AckLevel = Literal["kafka", "journal"]


class EventsAcked(Protocol):
    """Journal sequences the Kafka events topic has acknowledged (acks=all)."""

    def acked_seq(self) -> int:
        """The highest journal seq such that it and every seq before it is acked."""
        ...

    async def wait_acked(self, seq: int) -> None:
        """Return once :meth:`acked_seq` is at least ``seq`` (callers bound the wait)."""
        ...


class WebhookAcks(Protocol):
    """Whether cluster mode can take an inbound event, and when a journaled one may be
    acknowledged (its webhook's 2xx)."""

    def admits(self, event: CloudEvent) -> str | None:
        """``None``, or why the events topic can never take ``event`` (its record is
        larger than the producer's ``max_record_bytes``): refused before journaling."""
        ...

    async def confirm(self, event_id: str) -> AckLevel:
        """Return once the journaled event ``event_id`` may be acknowledged, saying how
        safe it is; raise :class:`~argbridge.errors.NotAcknowledged` when it may not be
        yet (the event stays journaled; the sender retries, and the retry is deduped)."""
        ...
