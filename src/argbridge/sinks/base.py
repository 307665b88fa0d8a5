"""The sink role and the worker that feeds it from the journal.

A :class:`Sink` knows how to deliver a batch to one destination. A :class:`SinkWorker`
owns everything else: it pulls batches after the sink's cursor, keeps the events the
routes send to this sink, calls :meth:`Sink.deliver`, and acknowledges the batch to the
journal only after ``deliver`` returned (the destination confirmed). A retryable
failure re-delivers the same batch after a backoff; a permanent one dead-letters it.
Sinks with their own per-event retry schedule (webhooks) record retries in the journal
from inside ``deliver`` and run them in ``background``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import anyio

from argbridge.backoff import Backoff
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.errors import JournalClosed, PermanentDeliveryError, SinkError
from argbridge.events import CloudEvent
from argbridge.journal import Journal, JournalRecord
from argbridge.logging import get_logger
from argbridge.metrics import Metrics
from argbridge.router import Route, Router


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one route of this sink (an event on two routes comes twice)."""

    record: JournalRecord
    route: Route

    @property
    def event(self) -> CloudEvent:
        return self.record.event


@dataclass(slots=True)
class Health:
    """Readiness of a component, with a short reason when not ready."""

    ready: bool = True
    detail: str = "ok"


@dataclass(slots=True)
class SinkContext:
    """What a sink gets from the runtime."""

    name: str
    journal: Journal
    metrics: Metrics
    clock: Clock = SYSTEM_CLOCK
    log: Any = field(default=None)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = get_logger(component=self.name, kind="sink")

    def count_sent(self, records: Sequence[JournalRecord]) -> None:
        """Count events the destination confirmed: sent events/bytes and the latency
        from journal commit to confirmation (Vector: only after success)."""
        if not records:
            return
        self.metrics.sent.labels(self.name, "sink").inc(len(records))
        self.metrics.sent_bytes.labels(self.name, "sink").inc(sum(r.size for r in records))
        now = self.clock.time()
        hist = self.metrics.delivery_latency.labels(self.name)
        for r in records:
            hist.observe(max(0.0, now - r.appended_at))


@runtime_checkable
class Sink(Protocol):
    """Delivers batches to one destination."""

    name: str

    async def start(self) -> None:
        """Connect; may raise (the worker retries with backoff)."""
        ...

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        """Deliver ``batch``; return only once the destination confirmed every event
        (or the sink recorded its retry/dead letter in the journal). Raise
        :class:`SinkError` to have the whole batch retried, or
        :class:`PermanentDeliveryError` to dead-letter it."""
        ...

    async def aclose(self) -> None:
        """Flush and close; bounded in time."""
        ...

    def health(self) -> Health:
        """Readiness for ``/readyz``."""
        ...


class SinkWorker:
    """Pulls from the journal, delivers through a sink, acknowledges after success."""

    def __init__(
        self,
        sink: Sink,
        ctx: SinkContext,
        router: Router,
        *,
        batch_size: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        self.sink = sink
        self.ctx = ctx
        self.router = router
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self.name = ctx.name
        self._stopping = anyio.Event()
        self._poked = anyio.Event()
        self.in_flight = 0
        self.started = False
        self.last_error: str | None = None
        self._reported_cursor = -1

    def stop(self) -> None:
        """Finish the batch in flight, then return from :meth:`run`."""
        self._stopping.set()

    def poke(self) -> None:
        """Read again now (after a replay moved the cursor back)."""
        self._poked.set()

    async def run(self) -> None:
        journal, metrics, log = self.ctx.journal, self.ctx.metrics, self.ctx.log
        if not await self._start_sink():
            return  # stopped before the sink ever started: nothing is in flight
        background = getattr(self.sink, "background", None)
        async with anyio.create_task_group() as tg:
            if background is not None:
                tg.start_soon(background, name=f"{self.name}-background")
            try:
                while not self._stopping.is_set():
                    records = await journal.read(self.name, self.batch_size)
                    if not records:
                        cursor = journal.cursor(self.name)
                        if cursor != self._reported_cursor:
                            # Once per idle transition: tells operators (and tests) the sink
                            # has delivered everything journaled so far.
                            log.debug("sink.caught_up", cursor=cursor)
                            self._reported_cursor = cursor
                        await self._unless_stopped(journal.wait_for_events, cursor, pokeable=True)
                        continue
                    deliveries = [
                        Delivery(r, route)
                        for r in records
                        for route in self.router.routes_for(self.name, r.event)
                    ]
                    metrics.received.labels(self.name, "sink").inc(len(deliveries))
                    metrics.received_bytes.labels(self.name, "sink").inc(
                        sum(d.record.size for d in deliveries)
                    )
                    if deliveries:
                        await self._deliver(deliveries)
                    await journal.ack(self.name, records[-1].seq)
                    self.in_flight = 0
            except JournalClosed:
                log.info("sink.stopped", reason="journal closed")
            finally:
                tg.cancel_scope.cancel()

    async def _unless_stopped(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, pokeable: bool = False
    ) -> None:
        """Await ``fn(*args)``, returning early on :meth:`stop` (or :meth:`poke`)."""
        async with anyio.create_task_group() as tg:

            async def stop_waiter() -> None:
                await self._stopping.wait()
                tg.cancel_scope.cancel()

            async def poke_waiter() -> None:
                await self._poked.wait()
                self._poked = anyio.Event()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_waiter)
            if pokeable:
                tg.start_soon(poke_waiter)
            await fn(*args)
            tg.cancel_scope.cancel()

    async def _start_sink(self) -> bool:
        """Start the sink, retrying with backoff; ``False`` when stopped first."""
        while not self._stopping.is_set():
            try:
                await self.sink.start()
                self.started = True
                self.backoff.reset()
                return True
            except Exception as exc:
                delay = self._failed(exc, "start")
                await self._unless_stopped(self.ctx.clock.sleep, delay)
        return False

    def _failed(self, exc: BaseException, during: str) -> float:
        error_type = type(exc).__name__
        self.last_error = f"{during}: {error_type}: {exc}"
        self.ctx.metrics.errors.labels(self.name, "sink", error_type).inc()
        delay = self.backoff.next_delay()
        self.ctx.log.warning(
            "sink.failed", during=during, error=exc, error_type=error_type, retry_in=round(delay, 3)
        )
        return delay

    async def _deliver(self, deliveries: Sequence[Delivery]) -> None:
        ctx = self.ctx
        self.in_flight = len(deliveries)
        while True:
            try:
                await self.sink.deliver(deliveries)
            except PermanentDeliveryError as exc:
                self._failed(exc, "deliver")
                for d in deliveries:
                    await ctx.journal.dead_letter(self.name, d.record, str(exc), attempts=1)
                return
            except (SinkError, Exception) as exc:  # bugs too: never drop, retry later
                delay = self._failed(exc, "deliver")
                await ctx.clock.sleep(delay)
                continue
            self.backoff.reset()
            self.last_error = None
            if not getattr(self.sink, "reports_sent", False):
                # (A sink with reports_sent counts what the destination confirmed itself.)
                ctx.count_sent([d.record for d in deliveries])
            return
