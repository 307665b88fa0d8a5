"""The stream-follower skeleton shared by every streaming source (SSE and WebSocket).

Owns the loop every followed stream repeats, written once:

- **connect**: one connection attempt at a time, inside the owner's cap on open
  streams (:class:`StreamSlots`; a stream holds a slot only while connected, never
  while backing off), after waiting while the journal signals backpressure;
- **read**: :meth:`StreamFollower.session` counts the open stream, runs the gap-fill
  hook, and hands the transport's reader a :class:`~argbridge.sources.pipeline.CommitPipeline`
  (reader → committer, bounded by bytes);
- **reconnect policy and backoff**: every attempt ends in a
  :class:`~argbridge.reconnect.Decision`; a reconnect sleeps its delay on the injected
  clock (counted and logged), a stop ends the follower;
- **gap-fill hook**: :meth:`StreamFollower.gap_fill` runs at the start of every session
  after a reconnect (or a resume), and :meth:`StreamFollower.finished` once when the
  stream is done;
- **stop on a refusal**: a decision with ``alert`` (401/403, close 1008) or a missing
  stream (``not_found``: 404/410, close 4404, a 1008 saying "not found") is handed to
  the injected :class:`StreamAlert` (an alert event + metric + error log on that
  stream); other stops are counted and logged. What a refusal means for the owner's
  readiness is the owner's call: a generic source follows one stream, so that stream
  refused is the source refused; an Arga source follows many runs, and one refused run
  is only that run's alert (:mod:`argbridge.sources.arga.refusals`).

A transport subclasses :class:`StreamFollower` and implements
:meth:`StreamFollower.connect`: SSE through
:class:`~argbridge.sources.ssefollow.SSEFollowerBase` (the Arga results follower and the
generic ``sse`` source), WebSocket through :func:`~argbridge.sources.wsconnect.ws_attempt`
(the Arga demo-run follower and the generic ``websocket`` source). A follower gets the
narrow services it uses at construction (slots, policy, alert) and never calls back
into the source that owns it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio

from argbridge.normalize.arga import auth_failed_event, run_refused_event
from argbridge.reconnect import Action, Decision, ReconnectPolicy
from argbridge.sources.base import SourceContext
from argbridge.sources.pipeline import CommitPipeline, ResumePoint


class StreamAlert(Protocol):
    """Raise the alert of a stream the upstream refused (401/403, WebSocket close 1008)
    or, with ``missing``, does not know (404/410, close 4404, a 1008 "not found")."""

    async def __call__(
        self, key: str, stream: str, detail: str, *, missing: bool = False
    ) -> None: ...


class AuthAlerter:
    """The :class:`StreamAlert` of a source whose streams use its key: a refusal is an
    ``argbridge.source.auth_failed`` event, the ``auth_failures`` metric and an error
    log line (counted in :attr:`failures`); a missing stream is an
    ``argbridge.source.run_not_found`` event, the ``run_not_found`` error metric and an
    error log line (counted in :attr:`missing`)."""

    def __init__(
        self, ctx: SourceContext, *, base_url: str, vendor: str = "Arga", log_ns: str = "arga"
    ) -> None:
        self.ctx = ctx
        self.base_url = base_url
        self.vendor = vendor
        self.log_ns = log_ns
        self.failures = 0
        self.missing = 0

    async def __call__(self, key: str, stream: str, detail: str, *, missing: bool = False) -> None:
        ctx = self.ctx
        if missing:
            self.missing += 1
            ctx.metrics.errors.labels(ctx.name, "source", "run_not_found").inc()
            missing_event = self.log_ns + ".run_not_found"
            ctx.log.error(missing_event, run_id=key, stream=stream, detail=detail)
            await ctx.emit(
                run_refused_event(
                    ctx.name,
                    key,
                    stream,
                    detail,
                    missing=True,
                    at=ctx.clock.time(),
                    base_url=self.base_url,
                    prefix=ctx.type_prefix,
                    vendor=self.vendor,
                )
            )
            return
        self.failures += 1
        ctx.metrics.auth_failures.labels(ctx.name).inc()
        event = self.log_ns + ".auth_failed"
        ctx.log.error(event, run_id=key, stream=stream, detail=detail)
        await ctx.emit(
            auth_failed_event(
                ctx.name,
                key,
                stream,
                detail,
                at=ctx.clock.time(),
                base_url=self.base_url,
                prefix=ctx.type_prefix,
                vendor=self.vendor,
            )
        )


class StreamSlots:
    """The cap on streams open at once (``max_streams``) of one source."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sem = anyio.Semaphore(capacity)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one slot while a stream is open."""
        async with self._sem:
            yield

    @property
    def open(self) -> int:
        return self.capacity - int(self._sem.value)


class StreamFollower(abc.ABC):
    """One followed stream: the loop of the module docstring around :meth:`connect`.

    ``key`` names the stream in logs and alerts (a run id, a subscription name);
    ``stream`` is its kind (``results``, ``demorun``, ``sse``…); ``log_ns`` prefixes the
    log event names (``arga.reconnect``, ``sse.reconnect``…).
    """

    def __init__(
        self,
        ctx: SourceContext,
        key: str,
        *,
        stream: str,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: StreamAlert,
        log_ns: str,
    ) -> None:
        self.ctx = ctx
        self.key = key
        self.stream = stream
        self.policy = policy
        self.slots = slots
        self.alert = alert
        self.log_ns = log_ns
        #: Events committed by the sessions' pipelines (gap-fill not included).
        self.events = 0
        #: Set once a first attempt was made: later sessions gap-fill.
        self.reconnected = False
        self.log = ctx.log.bind(run_id=key, stream=stream)
        self._ev_reconnect = f"{log_ns}.reconnect"
        self._ev_finished = f"{log_ns}.run_finished"
        self._ev_stopped = f"{log_ns}.stream_stopped"

    # -- the transport's part ------------------------------------------------------------

    @abc.abstractmethod
    async def connect(self) -> Decision:
        """One connection attempt (a slot is held): open the stream, read it through
        :meth:`session`, and classify how it ended. Never raises for network trouble."""

    async def prepare(self) -> Decision | None:
        """Before the first attempt (e.g. load the resume point). A returned decision is
        handled as if an attempt had ended with it (a stream handed over already open)."""
        return None

    async def gap_fill(self) -> int:
        """Catch up on what a reconnect missed; returns the events that were new."""
        return 0

    async def finished(self) -> None:
        """The stream is done (terminal event): a last catch-up, if any."""
        return None

    # -- the skeleton --------------------------------------------------------------------

    async def run(self) -> str:
        """Follow until done (``"done"``) or the policy stops (its reason)."""
        decision = await self.prepare()
        if decision is not None:
            self.reconnected = True
        while True:
            if decision is None:
                await self.ctx.wait_ready()
                async with self.slots.hold():
                    self.policy.attempt()
                    decision = await self.connect()
                self.reconnected = True
            if decision.stops:
                return await self._finish(decision)
            await self._wait(decision)
            decision = None

    async def session(
        self,
        read: Callable[[CommitPipeline], Awaitable[Decision]],
        *,
        resume: ResumePoint | None = None,
        gap_fill: bool | None = None,
    ) -> Decision:
        """Run one connected session: gauge, gap-fill (after a reconnect unless
        ``gap_fill`` says otherwise), then ``read`` into a commit pipeline; returns how
        the session ended. Everything read is committed before this returns."""
        gauge = self.ctx.metrics.open_streams.labels(self.ctx.name)
        gauge.inc()
        try:
            if self.reconnected if gap_fill is None else gap_fill:
                await self.gap_fill()
            pipe = CommitPipeline(self.ctx, resume)
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe.run)
                try:
                    decision = await read(pipe)
                finally:
                    pipe.close()  # the committer journals what was read, then ends
            self.events += pipe.committed
            return decision
        finally:
            gauge.dec()

    async def _wait(self, decision: Decision) -> None:
        self.ctx.metrics.reconnects.labels(self.ctx.name).inc()
        self.log.info(
            self._ev_reconnect,
            reason=decision.reason,
            detail=decision.detail,
            delay=round(decision.delay, 3),
            **self.resume_fields(),
        )
        await self.ctx.clock.sleep(decision.delay)

    def resume_fields(self) -> dict[str, Any]:
        """Extra fields of the reconnect log line (e.g. the ``Last-Event-ID``)."""
        return {}

    async def _finish(self, decision: Decision) -> str:
        if decision.action is Action.DONE:
            await self.finished()
            self.log.info(self._ev_finished, events=self.events)
            return "done"
        if decision.alert or decision.reason == "not_found":
            missing = not decision.alert
            await self.alert(self.key, self.stream, decision.detail, missing=missing)
        else:
            self.ctx.metrics.errors.labels(self.ctx.name, "source", decision.reason).inc()
            self.log.warning(self._ev_stopped, reason=decision.reason, detail=decision.detail)
        return decision.reason
