"""Shared sink plumbing: redelivering requeued events, waiting on a clock or a wake-up,
and keeping the dead-letter gauge current.

``argbridge dlq replay`` moves dead letters back into the journal's retry table (due
now). The webhook sink runs its own retry loop over that table; the Kafka and Slack
sinks run a :class:`RequeueRunner` in ``background()``, which hands due items to the
sink's ``deliver`` (routed again with the configured routes) and reschedules them with
backoff when delivery fails, so a replay never blocks the live stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio

from argbridge.backoff import Backoff
from argbridge.clock import Clock
from argbridge.config.settings import Settings
from argbridge.errors import PermanentDeliveryError
from argbridge.journal import JournalRecord, RetryItem
from argbridge.router import Route, Router
from argbridge.sinks.base import Delivery, SinkContext

#: How long a retry loop sleeps when nothing is scheduled (a wake-up cuts it short).
IDLE_POLL = 30.0


class Waker:
    """An event a loop sleeps on, together with a clock timeout."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, clock: Clock, seconds: float) -> None:
        """Return after ``seconds`` on ``clock`` or as soon as :meth:`wake` is called."""
        if self._event.is_set():
            self._event = anyio.Event()
            return
        event = self._event
        async with anyio.create_task_group() as tg:

            async def sleeper() -> None:
                await clock.sleep(max(0.0, seconds))
                tg.cancel_scope.cancel()

            tg.start_soon(sleeper)
            await event.wait()
            tg.cancel_scope.cancel()
        if self._event is event:
            self._event = anyio.Event()


async def refresh_dead_letter_gauge(ctx: SinkContext) -> None:
    try:
        n = await ctx.journal.count_dead_letters(ctx.name)
    except Exception:  # the journal may be closing; the gauge is best effort
        return
    ctx.metrics.dead_letters.labels(ctx.name).set(n)


def as_record(item: RetryItem | JournalRecord) -> JournalRecord:
    if isinstance(item, JournalRecord):
        return item
    return JournalRecord(item.seq, item.event, len(item.event.to_json()), item.due_at)


def route_again(name: str, router: Router, record: JournalRecord) -> list[Delivery]:
    """The deliveries for a requeued event under today's routes (at least one)."""
    routes = router.routes_for(name, record.event) or [Route("replay", (name,), ())]
    return [Delivery(record, route) for route in routes]


class DuePasses:
    """The passes of a sink's retry loop over the journal's retry table: the loop calls
    :meth:`found_nothing` each time a pass finds nothing due; :meth:`caught_up` waits for
    such a pass with nothing due now (tests and tools wait on it, never poll)."""

    def __init__(self) -> None:
        self._idle = anyio.Event()

    def found_nothing(self) -> None:
        self._idle.set()
        self._idle = anyio.Event()

    async def caught_up(self, ctx: SinkContext) -> None:
        """Return once every item of ``ctx``'s sink due now was run (delivered,
        rescheduled or dead-lettered) and a pass found nothing more due."""
        while True:
            idle = self._idle  # (before the check: a pass ending meanwhile is seen)
            if not await ctx.journal.due_retries(ctx.name, ctx.clock.time(), 1):
                return
            await idle.wait()


class RequeueRunner:
    """Runs a sink's due retry-table items through ``deliver`` (see the module doc)."""

    def __init__(
        self,
        ctx: SinkContext,
        settings: Settings,
        deliver: Callable[[Sequence[Delivery]], Awaitable[None]],
        *,
        batch: int = 100,
        backoff: Backoff | None = None,
    ) -> None:
        self.ctx = ctx
        self.router = Router.from_settings(settings)
        self.deliver = deliver
        self.batch = batch
        self.backoff = backoff or Backoff(base=1.0, cap=300.0)
        self.waker = Waker()
        self.passes = DuePasses()

    async def caught_up(self) -> None:
        """Return once every item due now was run (delivered, rescheduled or
        dead-lettered) and a pass found nothing more due."""
        await self.passes.caught_up(self.ctx)

    async def run(self) -> None:
        ctx = self.ctx
        while True:
            now = ctx.clock.time()
            items = await ctx.journal.due_retries(ctx.name, now, self.batch)
            if not items:
                self.passes.found_nothing()
                due = await ctx.journal.next_retry_due(ctx.name)
                wait = IDLE_POLL if due is None else min(IDLE_POLL, due - now)
                await self.waker.wait(ctx.clock, wait)
                continue
            await self.run_items(items)

    async def run_items(self, items: Sequence[RetryItem]) -> None:
        ctx = self.ctx
        deliveries = [
            d for item in items for d in route_again(ctx.name, self.router, as_record(item))
        ]
        try:
            await self.deliver(deliveries)
        except PermanentDeliveryError as exc:
            for item in items:
                await ctx.journal.dead_letter(ctx.name, item, str(exc), item.attempt + 1)
            await refresh_dead_letter_gauge(ctx)
            return
        except Exception as exc:
            delay = self.backoff.next_delay()
            ctx.metrics.errors.labels(ctx.name, "sink", type(exc).__name__).inc()
            ctx.log.warning("sink.requeue_failed", error=exc, retry_in=round(delay, 3))
            due = ctx.clock.time() + delay
            for item in items:
                await ctx.journal.schedule_retry(ctx.name, item, item.attempt + 1, due, str(exc))
            return
        self.backoff.reset()
        for item in items:
            await ctx.journal.clear_retry(ctx.name, item.event.id)
        await refresh_dead_letter_gauge(ctx)
