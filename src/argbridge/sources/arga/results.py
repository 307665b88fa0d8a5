"""Follows one validation run's results SSE stream (``GET /validate/{run_id}/results``).

Owns the SSE transport of the :class:`~argbridge.sources.follower.StreamFollower`
skeleton for Arga: bytes → :class:`~argbridge.sse.SSEDecoder` → :func:`results_event`
→ journal, the persisted ``Last-Event-ID`` (saved with ``journal.set_state`` after the
events before it were committed, so a restarted daemon resumes from it), and the
gap-fill from ``GET /runs/{run_id}`` after every reconnect (deterministic ids drop the
overlap). While the journal signals backpressure the reader stops reading, so TCP
pushes back on the server and memory stays bounded by the socket buffers.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from argbridge.events import CloudEvent, now_rfc3339
from argbridge.normalize.arga import is_terminal_results_event, results_event, results_from_run
from argbridge.reconnect import Decision, ReconnectPolicy
from argbridge.sources.arga.api import ArgaApi, fetch_run
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import AuthAlert, StreamFollower, StreamSlots
from argbridge.sources.pipeline import CommitPipeline
from argbridge.sse import SSEDecoder


def last_id_key(source: str, run_id: str) -> str:
    return f"arga:{source}:sse:{run_id}:last_id"


class ResultsFollower(StreamFollower):
    """The SSE subscription of one validation run; ``initial`` is a results stream
    already open (the answer of a start request), read before any reconnect."""

    def __init__(
        self,
        api: ArgaApi,
        ctx: SourceContext,
        run_id: str,
        *,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: AuthAlert,
        initial: httpx.Response | None = None,
    ) -> None:
        super().__init__(
            ctx, run_id, stream="results", policy=policy, slots=slots, alert=alert, log_ns="arga"
        )
        self.api = api
        self.run_id = run_id
        self.last_id = ""
        self._queued_id = ""
        self.terminal = False
        self._initial = initial

    async def prepare(self) -> Decision | None:
        self.last_id = (
            await self.ctx.journal.get_state(last_id_key(self.ctx.name, self.run_id)) or ""
        )
        self._queued_id = self.last_id
        self.reconnected = bool(self.last_id)  # a restart resumes: fill what we missed
        initial, self._initial = self._initial, None
        if initial is None:
            return None
        return await self._session(initial, gap_fill=False)

    async def connect(self) -> Decision:
        headers = {"accept": "text/event-stream", "cache-control": "no-store"}
        if self.last_id:
            headers["last-event-id"] = self.last_id
        try:
            async with self.api.client.stream(
                "GET", f"/validate/{self.run_id}/results", headers=headers
            ) as response:
                return await self._session(response)
        except httpx.TransportError as exc:
            return self.policy.on_network_error(type(exc).__name__)

    def resume_fields(self) -> dict[str, Any]:
        return {"last_event_id": self.last_id or None}

    async def finished(self) -> None:
        # A reconnect may have come back to a terminal run: one last catch-up.
        await self.gap_fill(include_terminal=True)

    async def _session(self, response: httpx.Response, *, gap_fill: bool | None = None) -> Decision:
        """Read one response; the decision says how the session ended."""
        decision = self.policy.on_response(
            response.status_code,
            response.headers.get("content-type"),
            response.headers.get("retry-after"),
            now=self.ctx.clock.time(),
        )
        if decision is not None:
            return decision
        decoder = SSEDecoder(last_event_id=self.last_id)
        self._queued_id = self.last_id

        async def read(pipe: CommitPipeline) -> Decision:
            return await self._read(response, decoder, pipe)

        return await self.session(read, on_committed=self._committed, gap_fill=gap_fill)

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
            await self.ctx.journal.set_state(last_id_key(self.ctx.name, self.run_id), last_id)

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
                    base_url=self.api.public_base_url,
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
        run = await fetch_run(self.api, self.ctx, self.log, self.run_id, f"/runs/{self.run_id}")
        if run is None:
            return 0
        events = results_from_run(
            self.run_id,
            run,
            base_url=self.api.public_base_url,
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
