"""Fencing of the exactly-once Kafka sink: recognising it, and stopping with an alert.

Owns what tells that another producer took this sink's ``transactional_id`` (aiokafka's
``ProducerFenced`` / ``InvalidProducerEpoch``, raised directly or failing a record of
the open transaction: :func:`fenced_cause`), the operator-facing reason, and the alert:
an error log, and an ``argbridge.sink.fenced`` event journaled through the sink's
:class:`~argbridge.journal.roles.ExactlyOnceSinkJournal`
(:func:`~argbridge.delivery.kafka_progress.fenced_alert_event`). A fenced
sink stops for good (:class:`~argbridge.errors.SinkStopped`) and never reconnects: that
would fence the newer daemon back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from argbridge.delivery.kafka_progress import fenced_alert_event
from argbridge.journal.roles import ExactlyOnceSinkJournal
from argbridge.sinks.base import SinkContext

#: The errors that mean another producer took over this ``transactional_id``.
FENCED = (ProducerFenced, InvalidProducerEpoch)


def is_fenced(exc: BaseException) -> bool:
    return isinstance(exc, FENCED)


def fenced_cause(
    futures: Iterable[tuple[Any, Any, Any]], exc: BaseException
) -> BaseException | None:
    """The fencing behind ``exc``: aiokafka's sender learns it in the background and
    fails the transaction's pending records (``futures``) with ``ProducerFenced``; a
    send made after that raises ``IllegalOperation`` ("not in transaction") instead.
    Either way this incarnation must stop, never reconnect (that would fence the newer
    one back)."""
    if is_fenced(exc):
        return exc
    for fut, _, _ in futures:
        if fut.done() and not fut.cancelled():
            error: BaseException | None = fut.exception()
            if error is not None and is_fenced(error):
                return error
    return None


def fenced_reason(instance_id: str | None, sink: str, transactional_id: str | None) -> str:
    """What a fenced sink says in ``/readyz``, its log and its error."""
    return (
        f"kafka: fenced: another argbridge with instance id {instance_id!r} and "
        f"sink {sink!r} (transactional_id {transactional_id!r}) took over; "
        "this sink stops (give each instance its own instance_id)"
    )


async def alert_fenced(
    ctx: SinkContext,
    journal: ExactlyOnceSinkJournal,
    instance_id: str | None,
    transactional_id: str | None,
) -> None:
    """Log the fence and journal the ``argbridge.sink.fenced`` alert (best effort: the
    journal may be closing; the log says it all)."""
    ctx.log.error("kafka.fenced", transactional_id=transactional_id, instance_id=instance_id)
    try:
        await journal.alert(
            fenced_alert_event(
                ctx.name, instance_id or "", transactional_id or "", at=ctx.clock.time()
            )
        )
    except Exception as alert_exc:
        ctx.log.warning("kafka.fenced_alert_failed", error=alert_exc)
