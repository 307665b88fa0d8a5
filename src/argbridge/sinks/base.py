"""The sink role and the worker that feeds it from the journal.

A :class:`Sink` knows how to deliver a batch to one destination. A :class:`SinkWorker`
owns everything else: it pulls batches after the sink's cursor, keeps the events the
routes send to this sink, calls :meth:`Sink.deliver`, and acknowledges the batch to the
journal only after ``deliver`` returned (the destination confirmed); that ack commits in
the background (:mod:`argbridge.sinks.acker`) while the worker reads on after the
batch. A retryable failure re-delivers the same batch after a backoff; a permanent one
dead-letters it.
Sinks with their own per-event retry schedule (webhooks) record retries in the journal
from inside ``deliver`` and run them in ``background`` (:class:`Background`; the other
optional capabilities are declared types too: :class:`Pipelined`, :class:`ReportsSent`,
:class:`Wakeable`, :class:`SelfDisabling`, :class:`Resumable`). When one filterless
route reaches the sink (the usual case), a batch is a :class:`RouteBatch`: a sequence
of deliveries made on demand over the records read.

Batches are bounded in events (``batch_size``) and in bytes (``batch_bytes``, at least
one event), so the worker holds at most three batches' bytes (read, built, awaiting
confirmation) whatever the events' sizes.

A :class:`Pipelined` sink (``submit(batch) -> confirmed``: Kafka) is pipelined while
there is a backlog (a full batch was read): the worker reads batch N+2 (in a thread),
submits N+1 and waits for N's confirmation at the same time, and acks the journal in
order, each batch only after its own confirmation. A failure or a rewind ends the pipeline; reading
starts again from the journal's cursor (see :meth:`SinkWorker._pipeline`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, overload, runtime_checkable

import anyio

from argbridge.backoff import Backoff
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.errors import JournalClosed, PermanentDeliveryError, SinkError, SinkStopped
from argbridge.events import CloudEvent
from argbridge.journal import JournalRecord
from argbridge.journal.roles import SinkJournal
from argbridge.logging import get_logger
from argbridge.metrics import Metrics
from argbridge.router import Route, Router
from argbridge.sinks.acker import Acker

#: Bytes of events one batch read from the journal holds at most (``batch_bytes``).
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024


class Delivery(NamedTuple):
    """One event for one route of this sink (an event on two routes comes twice).

    A named tuple (immutable like a frozen dataclass, built in a tenth of the time: the
    worker makes one per event and route)."""

    record: JournalRecord
    route: Route

    @property
    def event(self) -> CloudEvent:
        return self.record.event


_new_delivery = tuple.__new__


class RouteBatch(Sequence[Delivery]):
    """The deliveries of ``records`` when all of them take one ``route`` (the usual case:
    one filterless route reaches the sink), without a :class:`Delivery` per event: they
    are made when iterated, and a sink that knows this type reads ``records`` directly
    (the Kafka sink's hot path)."""

    __slots__ = ("records", "route")

    def __init__(self, records: Sequence[JournalRecord], route: Route) -> None:
        self.records = records
        self.route = route

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Delivery: ...

    @overload
    def __getitem__(self, index: slice) -> list[Delivery]: ...

    def __getitem__(self, index: int | slice) -> Delivery | list[Delivery]:
        if isinstance(index, slice):
            return [Delivery(r, self.route) for r in self.records[index]]
        return Delivery(self.records[index], self.route)

    def __iter__(self) -> Iterator[Delivery]:
        route = self.route
        for r in self.records:
            yield _new_delivery(Delivery, (r, route))

    def __repr__(self) -> str:
        return f"RouteBatch({len(self.records)} records, route={self.route.name!r})"


def records_of(batch: Sequence[Delivery]) -> Sequence[JournalRecord]:
    """The records of ``batch`` (one per delivery)."""
    if type(batch) is RouteBatch:
        return batch.records
    return [d.record for d in batch]


@dataclass(slots=True)
class Health:
    """Readiness of a component, with a short reason when not ready."""

    ready: bool = True
    detail: str = "ok"


@dataclass(slots=True)
class SinkContext:
    """What a sink gets from the runtime."""

    name: str
    journal: SinkJournal
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
        # One call for the batch (the events of a group commit share appended_at).
        now = self.clock.time()
        self.metrics.delivery_latency.labels(self.name).observe_many(
            [now - r.appended_at for r in records]
        )


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


@runtime_checkable
class Resumable(Protocol):
    """A sink that knows when its unreachable destination answers again (Kafka): the
    worker's retry backoff ends then, so delivery resumes within the sink's readiness
    bound instead of after a backoff of up to ``retry_max``."""

    async def resumed(self) -> None:
        """Return once the destination, unreachable at or since the call, is back."""
        ...


# Optional capabilities: a sink declares one by having its member (the worker and the
# control API test with ``isinstance``), never found by probing attribute names.


@runtime_checkable
class Background(Protocol):
    """A sink with work of its own beside delivery (a retry loop, a readiness probe):
    the worker runs :meth:`background` for as long as it runs the sink."""

    async def background(self) -> None: ...


@runtime_checkable
class Pipelined(Protocol):
    """A sink whose delivery has two halves (Kafka): the worker drains a backlog by
    submitting batch N+1 while batch N awaits its confirmation (see
    :meth:`SinkWorker._pipeline`)."""

    async def submit(self, batch: Sequence[Delivery]) -> Callable[[], Awaitable[None]]:
        """Hand ``batch`` over; the returned call waits until the destination confirmed
        it (raising as :meth:`Sink.deliver` would)."""
        ...


@runtime_checkable
class ReportsSent(Protocol):
    """A sink that counts what its destination confirmed itself
    (:meth:`SinkContext.count_sent`, e.g. only the events a transaction committed or a
    webhook endpoint accepted): the worker does not count its batches again."""

    reports_sent: Literal[True]


@runtime_checkable
class Wakeable(Protocol):
    """A sink with a retry loop of its own: ``dlq replay`` wakes it once dead letters
    are requeued (due now)."""

    def wake(self) -> None: ...


@runtime_checkable
class SelfDisabling(Protocol):
    """A sink that disables its destination by itself (a webhook endpoint answering
    410 Gone): ``dlq replay`` enables it again before requeueing."""

    async def enable(self) -> None: ...


class WorkerRole(Protocol):
    """What the runtime, ``/readyz``, ``argbridge status`` and the control API use of a
    sink's worker: a :class:`SinkWorker`, or in cluster mode a Slack/webhook sink's
    :class:`~argbridge.cluster.delivery.DeliveryConsumer`."""

    started: bool
    last_error: str | None
    in_flight: int

    async def run(self) -> None: ...
    def stop(self) -> None: ...
    def poke(self) -> None: ...
    def set_router(self, router: Router) -> None: ...
    async def caught_up(self) -> None:
        """Return once the worker found nothing more to deliver."""
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
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        linger: float = 0.0,
    ) -> None:
        self.sink = sink
        self.ctx = ctx
        self.router = router
        self.batch_size = batch_size
        #: A batch read from the journal stops at this many bytes of events (at least one
        #: event): what the worker holds is bounded in bytes, not only in events.
        self.batch_bytes = batch_bytes
        #: Caught up and woken by a new event, or done with a partial batch while more
        #: came in: wait this long before reading, so the events of the next few ms
        #: share one batch (one request, one cursor ack).
        self.linger = linger
        self.backoff = backoff or Backoff()
        self.name = ctx.name
        self._stopping = anyio.Event()
        self._poked = anyio.Event()
        #: The waits in progress (their cancel scopes, and whether a poke ends them).
        self._waits: list[tuple[anyio.CancelScope, bool]] = []
        #: Set (and replaced) each time a batch is handed to the sink: see :meth:`delivering`.
        self._handed = anyio.Event()
        self.in_flight = 0
        self.started = False
        self.last_error: str | None = None
        self._reported_cursor = -1
        #: After a pipeline failure the next batch goes through the plain retrying loop.
        self._serial_next = False
        #: The route every event takes when one filterless route reaches this sink (the
        #: usual case) and the batch holds none of argbridge's own events: no per-event
        #: routing, no event decode (see _route).
        self._route_all: Route | None = None
        self.set_router(router)
        self._resumable = sink if isinstance(sink, Resumable) else None
        #: Set (and replaced) each time a read finds nothing new: see :meth:`caught_up`.
        self._idle = anyio.Event()

    def set_router(self, router: Router) -> None:
        """Route with ``router`` from the next batch on (a live reload)."""
        routes = [r for r in router.routes if self.name in r.sinks]
        self._route_all = routes[0] if len(routes) == 1 and not routes[0].filters else None
        self.router = router

    def stop(self) -> None:
        """Finish the batch in flight, then return from :meth:`run`."""
        self._stopping.set()
        for scope, _ in self._waits:
            scope.cancel()

    async def caught_up(self) -> None:
        """Return once this sink delivered (or dead-lettered) everything journaled so
        far and found nothing more to read."""
        journal = self.ctx.journal
        while journal.backlog(self.name) > 0:
            await self._idle.wait()

    @property
    def in_flight(self) -> int:
        """Events handed to the sink and not confirmed yet."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, events: int) -> None:
        self._in_flight = events
        if events > 0:
            self._handed.set()
            self._handed = anyio.Event()

    async def delivering(self) -> None:
        """Return once a batch is handed to the sink (at once when one is in flight)."""
        if self._in_flight == 0:
            await self._handed.wait()

    def poke(self) -> None:
        """Read again now (after a replay moved the cursor back)."""
        self._poked.set()
        for scope, pokeable in self._waits:
            if pokeable:
                scope.cancel()

    async def run(self) -> None:
        journal, log = self.ctx.journal, self.ctx.log
        try:
            if not await self._start_sink():
                return  # stopped before the sink ever started: nothing is in flight
        except SinkStopped as exc:
            self._stopped_for_good(exc)
            return
        pipelined = isinstance(self.sink, Pipelined)
        async with anyio.create_task_group() as tg:
            if isinstance(self.sink, Background):
                tg.start_soon(self.sink.background, name=f"{self.name}-background")
            # The plain loop's acks commit in the background (sinks/acker.py); meanwhile
            # it reads on after the last seq it delivered (``None``: after the cursor).
            acker = Acker(journal, self.name, self.poke)
            tg.start_soon(acker.run, name=f"{self.name}-acks")
            position: int | None = None
            try:
                while not self._stopping.is_set():
                    if acker.rewound:  # an ack was stale: read again from the cursor
                        acker.restart()
                        position = None
                    if position is None:
                        records = await journal.read(self.name, self.batch_size, self.batch_bytes)
                    else:
                        records = await journal.read_after(
                            position, self.batch_size, self.batch_bytes
                        )
                    if not records and position is not None:
                        # Caught up, the last ack still on its way: new events or its
                        # commit, whichever comes first (the acker pokes this wait).
                        if not acker.settled:
                            await self._unless_stopped(
                                journal.wait_for_events, position, pokeable=True
                            )
                        if acker.settled:  # idle only once the cursor is here
                            await acker.settle()
                            position = None
                        continue
                    if not records:
                        self._idle.set()
                        self._idle = anyio.Event()
                        cursor = journal.cursor(self.name)
                        if cursor != self._reported_cursor:
                            # Once per idle transition: tells operators (and tests) the sink
                            # has delivered everything journaled so far.
                            log.debug("sink.caught_up", cursor=cursor)
                            self._reported_cursor = cursor
                        await self._unless_stopped(journal.wait_for_events, cursor, pokeable=True)
                        if self.linger > 0 and not self._stopping.is_set():
                            await self._unless_stopped(self.ctx.clock.sleep, self.linger)
                        continue
                    if pipelined and self._full(records) and not self._serial_next:
                        # A full batch: a backlog to drain, where overlapping the stages
                        # pays. A partial one (caught up, live traffic) takes the plain
                        # loop: nothing to read ahead, and fewer hops per event.
                        await acker.settle()  # the pipeline acks in order from the cursor
                        position = None
                        if not acker.rewound:
                            await self._pipeline(records)
                        continue
                    # The plain loop (and, after a pipeline failure, the batch that failed:
                    # retried here with backoff, or dead-lettered when permanent).
                    self._serial_next = False
                    deliveries = self._route(records)
                    if deliveries:
                        await self._deliver(deliveries)
                    self.in_flight = 0
                    position = records[-1].seq
                    acker.ack(position)
                    if (
                        self.linger > 0
                        and journal.backlog(self.name) > position - journal.cursor(self.name)
                        and not self._full(records)
                        and not self._stopping.is_set()
                    ):
                        # Live traffic: events came in while this partial batch was
                        # delivered. Let the next few ms join them, as after a wake-up,
                        # instead of sending them at once as a batch of one or two.
                        await self._unless_stopped(self.ctx.clock.sleep, self.linger)
                await acker.settle()
            except JournalClosed:
                log.info("sink.stopped", reason="journal closed")
            except SinkStopped as exc:
                self._stopped_for_good(exc)
            finally:
                try:  # stopped by a later batch's failure: the delivered ones still count
                    await acker.wait_settled()
                finally:
                    tg.cancel_scope.cancel()

    def _full(self, records: Sequence[JournalRecord]) -> bool:
        """A full batch (by count, or at least half full by bytes: the read stops before
        the event that would pass ``batch_bytes``): there is a backlog to drain."""
        return len(records) == self.batch_size or (
            2 * sum([r.size for r in records]) >= self.batch_bytes
        )

    def _route(self, records: Sequence[JournalRecord]) -> Sequence[Delivery]:
        """The deliveries of ``records`` for this sink (counted as received)."""
        routes_for, name = self.router.routes_for, self.name
        deliveries: Sequence[Delivery]
        if self._route_all is not None and not self._ops_in(records):
            deliveries = RouteBatch(records, self._route_all)
            size = sum([r.size for r in records])
        else:
            deliveries = [
                Delivery(r, route) for r in records for route in routes_for(name, r.event)
            ]
            size = sum([d.record.size for d in deliveries])
        metrics = self.ctx.metrics
        metrics.received.labels(name, "sink").inc(len(deliveries))
        metrics.received_bytes.labels(name, "sink").inc(size)
        return deliveries

    def _ops_in(self, records: Sequence[JournalRecord]) -> bool:
        """Whether ``records`` hold argbridge's own events (routed by the ops routes, not
        by the data route): :meth:`Router.body_is_ops` on the stored attributes JSON (the
        event's JSON without ``data``: the same ``type``, and no body joined and kept per
        record, 1.3 KiB for a 1 KiB event)."""
        router = self.router
        if router.ops_prefix is None:
            return False
        is_ops = router.body_is_ops
        for r in records:
            if is_ops(r.parts()[0]):
                return True
        return False

    async def _pipeline(self, records: list[JournalRecord]) -> None:
        """Deliver ``records`` and the batches after them through ``sink.submit``,
        overlapping three stages: reading batch N+2 (SQLite, in a thread), building and
        submitting batch N+1, and waiting for batch N's confirmation. Batches are acked
        to the journal in order, each only after its own confirmation.

        Ends when the journal has nothing more, on :meth:`stop` (after the submitted
        batches are confirmed and acked), on a failure (the unacked batches are read
        again from the cursor: the first one goes through the plain retrying loop), or
        when a rewind made an ack stale (the journal ignored it: the cursor is not where
        the ack put it) — the next read starts from the rewound cursor.

        Only the first batch comes from ``journal.read`` (which records the read epoch
        the acks are checked against); the next ones come from ``read_after`` the
        previous batch, so a rewind during the pipeline makes every later ack stale too.
        """
        journal, name = self.ctx.journal, self.name
        assert isinstance(self.sink, Pipelined)
        submit = self.sink.submit
        # One batch may wait here while the previous one is confirmed and acked (the
        # journal's ack is an fsync): the next one is built meanwhile.
        send, receive = anyio.create_memory_object_stream[
            tuple[Callable[[], Awaitable[None]] | None, int, Sequence[Delivery]]
        ](1)
        reports_sent = isinstance(self.sink, ReportsSent)
        failure: list[BaseException] = []
        closed: list[JournalClosed] = []

        async def confirm_in_order(tg: anyio.abc.TaskGroup) -> None:
            async with receive:
                async for confirmed, last_seq, deliveries in receive:
                    try:
                        if confirmed is not None:
                            await confirmed()
                    except Exception as exc:  # bugs too: never drop, retry later
                        failure.append(exc)
                        tg.cancel_scope.cancel()
                        return
                    if deliveries:
                        self.backoff.reset()
                        self.last_error = None
                        if not reports_sent:
                            self.ctx.count_sent(records_of(deliveries))
                    try:
                        await journal.ack(name, last_seq)
                    except JournalClosed as exc:
                        closed.append(exc)
                        tg.cancel_scope.cancel()
                        return
                    self.in_flight = max(0, self.in_flight - len(deliveries))
                    if journal.cursor(name) != last_seq:
                        # A rewind since the first read: the ack was stale and ignored.
                        tg.cancel_scope.cancel()
                        return

        async def read_next(after: int, box: list[list[JournalRecord]], done: anyio.Event) -> None:
            try:
                box.append(await journal.read_after(after, self.batch_size, self.batch_bytes))
            except JournalClosed as exc:
                closed.append(exc)
                box.append([])
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(confirm_in_order, tg)
            async with send:
                while records:
                    box: list[list[JournalRecord]] = []
                    fetched = anyio.Event()
                    if not self._stopping.is_set():
                        tg.start_soon(read_next, records[-1].seq, box, fetched)
                    deliveries = self._route(records)
                    confirmed = None
                    if deliveries:
                        try:
                            confirmed = await submit(deliveries)
                        except Exception as exc:
                            failure.append(exc)
                            tg.cancel_scope.cancel()
                            break
                        self.in_flight += len(deliveries)
                    await send.send((confirmed, records[-1].seq, deliveries))
                    if self._stopping.is_set():
                        break
                    await fetched.wait()
                    records = box[0]
        self.in_flight = 0
        if closed:
            raise closed[0]
        if failure and isinstance(failure[0], SinkStopped):
            raise failure[0]
        if failure:
            self._serial_next = True
            delay = self._failed(failure[0], "deliver")
            await self._unless_stopped(self._retry_wait, delay)

    async def _unless_stopped(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, pokeable: bool = False
    ) -> None:
        """Await ``fn(*args)``, returning early on :meth:`stop` (or :meth:`poke`): they
        cancel the wait's scope. (A task group with a watcher task per signal cost two
        task spawns per wait, and a caught-up worker waits twice per batch.)"""
        if self._stopping.is_set():
            return
        if pokeable and self._poked.is_set():
            self._poked = anyio.Event()
            return
        entry = (anyio.CancelScope(), pokeable)
        self._waits.append(entry)
        try:
            with entry[0]:
                await fn(*args)
        finally:
            self._waits.remove(entry)
        if pokeable and self._poked.is_set():
            self._poked = anyio.Event()

    async def _start_sink(self) -> bool:
        """Start the sink, retrying with backoff; ``False`` when stopped first."""
        while not self._stopping.is_set():
            try:
                await self.sink.start()
                self.started = True
                self.backoff.reset()
                return True
            except SinkStopped:
                raise
            except Exception as exc:
                delay = self._failed(exc, "start")
                await self._unless_stopped(self._retry_wait, delay)
        return False

    def _stopped_for_good(self, exc: SinkStopped) -> None:
        """The sink refused to go on (:class:`SinkStopped`): the worker ends; what it
        had not delivered stays in the journal, after the cursor."""
        self.last_error = f"stopped: {exc}"
        self.in_flight = 0
        self.ctx.metrics.errors.labels(self.name, "sink", type(exc).__name__).inc()
        self.ctx.log.error("sink.stopped", reason=str(exc), error_type=type(exc).__name__)

    async def _retry_wait(self, delay: float) -> None:
        """The backoff before a retry; a :class:`Resumable` sink ends it early when its
        destination comes back."""
        resumable = self._resumable
        if resumable is None:
            await self.ctx.clock.sleep(delay)
            return
        async with anyio.create_task_group() as tg:

            async def on_resume() -> None:
                await resumable.resumed()
                tg.cancel_scope.cancel()

            tg.start_soon(on_resume)
            await self.ctx.clock.sleep(delay)
            tg.cancel_scope.cancel()

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
            except SinkStopped:
                raise
            except PermanentDeliveryError as exc:
                self._failed(exc, "deliver")
                for d in deliveries:
                    await ctx.journal.dead_letter(self.name, d.record, str(exc), attempts=1)
                return
            except (SinkError, Exception) as exc:  # bugs too: never drop, retry later
                delay = self._failed(exc, "deliver")
                await self._retry_wait(delay)
                continue
            self.backoff.reset()
            self.last_error = None
            if not isinstance(self.sink, ReportsSent):
                # (A ReportsSent sink counts what the destination confirmed itself.)
                ctx.count_sent(records_of(deliveries))
            return
