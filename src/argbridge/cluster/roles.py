"""The narrow roles cluster mode's parts hand one another.

:class:`EventsAcked` is the internal events-topic producer's progress as the others see
it: stream positions are recorded on the control topic only once the events before them
are acked there (handover without loss), and with ``cluster.webhook_ack = "kafka"`` a
webhook's 2xx waits for its event's ack.
"""

from __future__ import annotations

from typing import Protocol


class EventsAcked(Protocol):
    """Journal sequences the Kafka events topic has acknowledged (acks=all)."""

    def acked_seq(self) -> int:
        """The highest journal seq such that it and every seq before it is acked."""
        ...

    async def wait_acked(self, seq: int) -> None:
        """Return once :meth:`acked_seq` is at least ``seq`` (callers bound the wait)."""
        ...
