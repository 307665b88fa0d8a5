"""The source role and what a running source gets from the runtime.

A source turns upstream traffic into CloudEvents and hands them to
:meth:`SourceContext.emit`, which journals them (the event is *accepted* when emit
returns) and counts them. Before reading more from upstream a source awaits
:meth:`SourceContext.wait_ready`, which blocks while the journal signals backpressure,
so a paused source stops reading and TCP pushes back on the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.cluster.roles import WebhookAcks
from argbridge.events import CloudEvent
from argbridge.journal import AppendStatus, EncodedEvent
from argbridge.journal.roles import SourceJournal
from argbridge.logging import Throttle, get_logger
from argbridge.metrics import Metrics
from argbridge.sinks.base import Health

if TYPE_CHECKING:
    from argbridge.http.asgi import Handler


@dataclass(slots=True)
class SourceContext:
    """The runtime's services for one source."""

    name: str
    journal: SourceJournal
    metrics: Metrics
    clock: Clock = SYSTEM_CLOCK
    type_prefix: str = ""
    log: Any = field(default=None)
    #: Cluster mode with ``webhook_ack = "kafka"``: what an inbound webhook's 2xx waits
    #: for after the journal commit (``None``: the commit is the ack).
    acks: WebhookAcks | None = None
    # Metric children of this source, looked up once: ``labels()`` costs ~1 µs a call,
    # and emit runs for every accepted event.
    _received: Any = field(default=None, init=False, repr=False)
    _duplicates: Any = field(default=None, init=False, repr=False)
    _rejected: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    #: Rejections are all counted but logged at most 5 per reason a minute: a flood of
    #: bad requests must not flood the log too.
    _throttle: Throttle = field(default_factory=Throttle, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = get_logger(component=self.name, kind="source")
        self._received = self.metrics.received.labels(self.name, "source")
        self._duplicates = self.metrics.discarded.labels(self.name, "source", "duplicate")

    @property
    def paused(self) -> bool:
        """Whether the journal currently asks sources to stop reading."""
        return self.journal.pause.is_paused

    async def wait_ready(self) -> None:
        """Block while the journal signals backpressure."""
        await self.journal.pause.wait_resumed()

    async def emit(self, event: CloudEvent, *, wait: bool = True) -> AppendStatus:
        """Journal ``event`` (durably) and count it; duplicates are counted, not errors.

        Waits while the journal's backlog is at its hard bound; with ``wait=False``
        raises :class:`~argbridge.journal.backpressure.IntakePaused` (a
        ``JournalError``) instead."""
        status = await self.journal.append(event, wait=wait)
        self._count(status, event)
        return status

    async def emit_many(self, events: Sequence[CloudEvent]) -> list[AppendStatus]:
        """Journal several events in one group commit."""
        return self._count_many(await self.journal.append_many(events))

    async def emit_encoded(
        self, items: Sequence[EncodedEvent], *, state: tuple[str, str] | None = None
    ) -> list[AppendStatus]:
        """:meth:`emit_many` of events encoded as they were read
        (:func:`~argbridge.journal.records.encoded`: a stream reader's queue holds their
        bytes, not their decoded objects); ``state``: a resume point ``(key, value)``
        stored once they are all journaled (with their group commit)."""
        return self._count_many(await self.journal.append_encoded(items, state=state))

    def _count_many(self, statuses: list[AppendStatus]) -> list[AppendStatus]:
        appended = sum(1 for status in statuses if status is AppendStatus.APPENDED)
        if appended:
            self._received.inc(appended)
        if appended < len(statuses):
            self._duplicates.inc(len(statuses) - appended)
        return statuses

    def _count(self, status: AppendStatus, event: CloudEvent) -> None:
        if status is AppendStatus.APPENDED:
            self._received.inc()
        else:
            self._duplicates.inc()

    def reject(self, reason: str, **fields: Any) -> None:
        """Count and log an upstream frame we cannot use (never raises). The log is
        throttled per reason (:class:`~argbridge.logging.Throttle`); the count is not."""
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = self.metrics.discarded.labels(
                self.name, "source", reason
            )
        counter.inc()
        suppressed = self._throttle.allow(reason, self.clock.monotonic())
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        self.log.warning("source.rejected", reason=reason, **fields)


@runtime_checkable
class Source(Protocol):
    """Reads one upstream into the journal until cancelled (or its feed ends)."""

    name: str

    async def run(self, ctx: SourceContext) -> None: ...

    def health(self) -> Health: ...


@runtime_checkable
class ServesHttp(Protocol):
    """An optional capability of a source: it receives over HTTP (inbound webhooks). The
    runtime adds its :meth:`routes` to the daemon's listener."""

    def routes(self, ctx: SourceContext) -> list[tuple[str, str, Handler]]:
        """``(method, path, handler)`` for each route this source serves."""
        ...
