"""Follows one validation run's results SSE stream (``GET /validate/{run_id}/results``).

Owns the per-run loop: one connection attempt at a time (inside the source's stream
cap), bytes → :class:`~argbridge.sse.SSEDecoder` → :func:`results_event` → journal,
the persisted ``Last-Event-ID`` (saved with ``journal.set_state`` after the events
before it were committed, so a restarted daemon resumes from it), the reconnect policy,
and the gap-fill from ``GET /runs/{run_id}`` after every reconnect (deterministic ids
drop the overlap). While the journal signals backpressure the reader stops reading, so
TCP pushes back on the server and memory stays bounded by the socket buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import httpx
import orjson

from argbridge.events import CloudEvent, now_rfc3339
from argbridge.normalize.arga import is_terminal_results_event, results_event, results_from_run
from argbridge.reconnect import Action, Decision, ReconnectPolicy
from argbridge.sources.arga_pipeline import CommitPipeline
from argbridge.sources.base import SourceContext
from argbridge.sse import SSEDecoder

if TYPE_CHECKING:
    from argbridge.sources.arga import ArgaSource


def last_id_key(source: str, run_id: str) -> str:
    return f"arga:{source}:sse:{run_id}:last_id"


class ResultsFollower:
    """The SSE subscription of one validation run."""

    def __init__(self, src: ArgaSource, ctx: SourceContext, run_id: str) -> None:
        self.src = src
        self.ctx = ctx
        self.run_id = run_id
        self.policy: ReconnectPolicy = src.new_policy()
        self.last_id = ""
        self._queued_id = ""
        self.events = 0
        self.terminal = False
        self.log = ctx.log.bind(run_id=run_id, stream="results")

    async def run(self, initial: httpx.Response | None = None) -> str:
        """Follow until the run is terminal (``"done"``) or the policy stops (reason)."""
        ctx = self.ctx
        self.last_id = await ctx.journal.get_state(last_id_key(self.src.name, self.run_id)) or ""
        self._queued_id = self.last_id
        need_gap_fill = bool(self.last_id)  # a restart resumes: fill what we missed
        if initial is not None:
            decision = await self._session(initial, gap_fill=False)
            need_gap_fill = True
            if decision.stops:
                return await self._finish(decision)
            await self._wait(decision)
        while True:
            await ctx.wait_ready()
            async with self.src.stream_slot():
                self.policy.attempt()
                headers = {"accept": "text/event-stream", "cache-control": "no-store"}
                if self.last_id:
                    headers["last-event-id"] = self.last_id
                try:
                    async with self.src.client.stream(
                        "GET", f"/validate/{self.run_id}/results", headers=headers
                    ) as response:
                        decision = await self._session(response, gap_fill=need_gap_fill)
                except httpx.TransportError as exc:
                    decision = self.policy.on_network_error(type(exc).__name__)
            need_gap_fill = True
            if decision.stops:
                return await self._finish(decision)
            await self._wait(decision)

    async def _wait(self, decision: Decision) -> None:
        self.ctx.metrics.reconnects.labels(self.ctx.name).inc()
        self.log.info(
            "arga.reconnect",
            reason=decision.reason,
            detail=decision.detail,
            delay=round(decision.delay, 3),
            last_event_id=self.last_id or None,
        )
        await self.ctx.clock.sleep(decision.delay)

    async def _finish(self, decision: Decision) -> str:
        if decision.action is Action.DONE:
            # A reconnect may have come back to a terminal run: one last catch-up.
            await self.gap_fill(include_terminal=True)
            self.log.info("arga.run_finished", events=self.events)
            return "done"
        if decision.alert or decision.reason == "not_found":
            missing = decision.reason == "not_found"
            await self.src.alert(self.ctx, self.run_id, "results", decision.detail, missing=missing)
        else:
            self.ctx.metrics.errors.labels(self.ctx.name, "source", decision.reason).inc()
            self.log.warning("arga.stream_stopped", reason=decision.reason, detail=decision.detail)
        return decision.reason

    async def _session(self, response: httpx.Response, *, gap_fill: bool) -> Decision:
        """Read one response; the decision says how the session ended."""
        decision = self.policy.on_response(
            response.status_code,
            response.headers.get("content-type"),
            response.headers.get("retry-after"),
            now=self.ctx.clock.time(),
        )
        if decision is not None:
            return decision
        gauge = self.ctx.metrics.open_streams.labels(self.ctx.name)
        gauge.inc()
        try:
            if gap_fill:
                await self.gap_fill()
            decoder = SSEDecoder(last_event_id=self.last_id)
            self._queued_id = self.last_id
            pipe = CommitPipeline(self.ctx, self._committed)
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe.run)
                try:
                    outcome = await self._read(response, decoder, pipe)
                finally:
                    pipe.close()  # the committer journals what was read, then ends
            self.events += pipe.committed
            return outcome
        finally:
            gauge.dec()

    async def _read(
        self, response: httpx.Response, decoder: SSEDecoder, pipe: CommitPipeline
    ) -> Decision:
        try:
            async for chunk in response.aiter_bytes():
                batch = self._decode(decoder, chunk)
                if batch or decoder.last_event_id != self._queued_id:
                    self._queued_id = decoder.last_event_id
                    await pipe.put(batch, decoder.last_event_id, len(chunk))
                if self.terminal:
                    return self.policy.on_eof(terminal=True)
                await self.ctx.wait_ready()  # backpressure: stop reading while paused
        except httpx.TransportError as exc:
            if decoder.pending_bytes:
                self.ctx.reject(
                    "truncated_frame",
                    run_id=self.run_id,
                    position=decoder.bytes_fed,
                    pending=decoder.pending_bytes,
                )
            return self.policy.on_network_error(type(exc).__name__)
        decoder.close()
        return self.policy.on_eof(terminal=self.terminal)

    async def _committed(self, last_id: str) -> None:
        """Persist the resume point once the events before it are in the journal."""
        if last_id != self.last_id:
            self.last_id = last_id
            await self.ctx.journal.set_state(last_id_key(self.src.name, self.run_id), last_id)

    def _decode(self, decoder: SSEDecoder, chunk: bytes) -> list[CloudEvent]:
        events = decoder.feed(chunk)
        batch: list[CloudEvent] = []
        now = now_rfc3339() if events else None
        for ev in events:
            try:
                payload: Any = orjson.loads(ev.data)
            except orjson.JSONDecodeError:
                payload = None
            if not isinstance(payload, dict):
                self.ctx.reject(
                    "malformed_json",
                    run_id=self.run_id,
                    position=decoder.bytes_fed,
                    event_id=ev.id or None,
                )
                continue
            batch.append(
                results_event(
                    self.run_id,
                    payload,
                    upstream_id=ev.id if ev.own_id and ev.id else None,
                    base_url=self.src.public_base_url,
                    prefix=self.ctx.type_prefix,
                    now=now,
                )
            )
            if is_terminal_results_event(payload):
                self.terminal = True
        if batch:
            self.policy.progressed()
        self.policy.set_server_retry(decoder.retry_ms)
        return batch

    async def gap_fill(self, *, include_terminal: bool = False) -> int:
        """Emit the step results of ``GET /runs/{run_id}`` (and its terminal event at the
        end, so the terminal event stays last); returns how many were new. Failures
        are logged: the live stream still runs."""
        run = await self.src.fetch_run(self.ctx, self.log, self.run_id, f"/runs/{self.run_id}")
        if run is None:
            return 0
        events = results_from_run(
            self.run_id,
            run,
            base_url=self.src.public_base_url,
            prefix=self.ctx.type_prefix,
            include_terminal=include_terminal,
        )
        if not events:
            return 0
        statuses = await self.ctx.emit_many(events)
        new = sum(1 for s in statuses if s.value == "appended")
        if new:
            self.log.info("arga.gap_filled", new=new, seen=len(events) - new)
        return new
