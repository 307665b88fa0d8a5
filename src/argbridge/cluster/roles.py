"""The narrow roles cluster mode's parts hand one another.

:class:`EventsAcked` is the internal events-topic producer's progress as the others see
it: stream positions are recorded on the control topic only once the events before them
are acked there (handover without loss), and with ``cluster.webhook_ack = "kafka"`` a
webhook's 2xx waits for its event's ack.

:class:`WebhookAcks` is what an inbound webhook source waits on before its 2xx in cluster
mode (``cluster.webhook_ack = "kafka"``; see :mod:`argbridge.cluster.webhook_ack`).

:class:`ControlPublisher` is what a source uses instead of following a run itself (ask
the cluster for it), :class:`RunOwner` what the control-topic member hands owned runs to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import anyio

if TYPE_CHECKING:
    from argbridge.cluster.lease import RunLease
    from argbridge.cluster.records import RunId
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


class ControlPublisher(Protocol):
    """Ask the cluster to follow a run (a hint on the control topic; idempotent by key)."""

    instance_id: str

    async def request(self, run: RunId, origin: str, *, force: bool = False) -> None: ...

    def source_stopped(self, source: str) -> None:
        """``source`` stopped: release its runs, hand them to it again once it runs."""


class RunOwner(Protocol):
    """A source whose runs the control-topic member hands out: :meth:`own` starts
    following one (returns once its follower task started), :meth:`disown` stops it and
    returns once it stopped; ``started`` is set once the source can take runs."""

    name: str
    started: anyio.Event

    async def own(self, lease: RunLease) -> None: ...

    async def disown(self, key: str) -> None: ...


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
