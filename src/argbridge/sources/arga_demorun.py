"""Follows one demo run's WebSocket feed (``WSS /demo-runner/runs/{run_id}/stream?token=``).

Owns the per-run loop with the ``websockets`` library, *without* its ``async for ws in
connect()`` reconnect loop (it reconnects with zero delay after an accepted-then-closed
connection, protocols.md §2): each attempt is one ``connect()`` inside the source's
stream cap, and :class:`~argbridge.reconnect.ReconnectPolicy` decides what follows.
Close 1008 (or a 401/403 handshake) → exactly one attempt, then stop, alert event
``argbridge.source.auth_failed`` and the ``auth_failures`` metric. Other closes →
backoff and reconnect. After every connect the run's ``events_json`` is fetched from
``GET /demo-runner/runs/{run_id}`` (the feed is live-only), so nothing between two
sessions is lost; event ids make the overlap disappear. ``done`` ends the subscription.

Keepalive pings are on, ``max_size``/``max_queue`` are bounded (when the queue is full
the client stops reading: TCP backpressure), permessage-deflate is configurable, proxies
from the environment are ignored (``proxy=None``), and the ``?token=`` never reaches a
log line or an exception message (only exception class names and close codes are logged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    WebSocketException,
)

from argbridge.events import CloudEvent
from argbridge.normalize.arga import demorun_event, demorun_from_run
from argbridge.reconnect import (
    AUTH_CLOSE_CODES,
    NOT_FOUND_CLOSE_CODES,
    Action,
    Decision,
    ReconnectPolicy,
)
from argbridge.sources.arga_pipeline import CommitPipeline
from argbridge.sources.base import SourceContext

if TYPE_CHECKING:
    from argbridge.sources.arga import ArgaSource

REFUSAL_CLOSE_CODES = AUTH_CLOSE_CODES | NOT_FOUND_CLOSE_CODES


class DemoRunFollower:
    """The WebSocket subscription of one demo run."""

    def __init__(self, src: ArgaSource, ctx: SourceContext, run_id: str) -> None:
        self.src = src
        self.ctx = ctx
        self.run_id = run_id
        self.policy: ReconnectPolicy = src.new_policy()
        self.events = 0
        self.messages = 0
        self.done = False
        self.log = ctx.log.bind(run_id=run_id, stream="demorun")

    def _url(self) -> str:
        base = self.src.base_url.rstrip("/")
        scheme = "wss" if base.startswith("https://") else "ws"
        host = base.split("://", 1)[1]
        token = quote(self.src.api_key, safe="")
        return (
            f"{scheme}://{host}/demo-runner/runs/{quote(self.run_id, safe='')}/stream?token={token}"
        )

    async def run(self) -> str:
        """Follow until ``done`` (``"done"``) or the policy stops (its reason)."""
        ctx = self.ctx
        ws_cfg = self.src.config.websocket
        while True:
            await ctx.wait_ready()
            async with self.src.stream_slot():
                self.policy.attempt()
                try:
                    async with connect(
                        self._url(),
                        proxy=None,
                        compression="deflate" if ws_cfg.compression else None,
                        open_timeout=ws_cfg.open_timeout,
                        close_timeout=ws_cfg.close_timeout,
                        ping_interval=ws_cfg.ping_interval or None,
                        ping_timeout=ws_cfg.ping_timeout or None,
                        max_size=ws_cfg.max_size,
                        max_queue=ws_cfg.max_queue,
                        user_agent_header="argbridge",
                    ) as ws:
                        decision = await self._session(ws)
                except InvalidStatus as exc:
                    response = exc.response
                    decision = self.policy.on_ws_handshake_status(
                        response.status_code,
                        response.headers.get("Retry-After"),
                        ctx.clock.time(),
                    )
                except ConnectionClosed as exc:  # closed during the opening handshake
                    decision = self.policy.on_ws_close(exc.rcvd.code if exc.rcvd else None)
                except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                    decision = self.policy.on_network_error(type(exc).__name__)
            if decision.stops:
                return await self._finish(decision)
            ctx.metrics.reconnects.labels(ctx.name).inc()
            self.log.info(
                "arga.reconnect",
                reason=decision.reason,
                detail=decision.detail,
                delay=round(decision.delay, 3),
            )
            await ctx.clock.sleep(decision.delay)

    async def _session(self, ws: Any) -> Decision:
        gauge = self.ctx.metrics.open_streams.labels(self.ctx.name)
        gauge.inc()
        try:
            await self.gap_fill()
            if self.done:
                # A finished run whose feed was closed with 1008 ("Test run not found")
                # is still reported: the close arrived while the run was gap-filled.
                closed = ws.protocol.close_rcvd
                if closed is not None and closed.code in REFUSAL_CLOSE_CODES:
                    return self.policy.on_ws_close(closed.code, reason=closed.reason)
                return Decision(Action.DONE, "done")
            pipe = CommitPipeline(self.ctx)
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe.run)
                try:
                    decision = await self._read(ws, pipe)
                finally:
                    pipe.close()  # the committer journals what was read, then ends
            self.events += pipe.committed
            return decision
        finally:
            gauge.dec()
            # Also on cancellation (shutdown): close politely but boundedly, then drop.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.src.config.websocket.close_timeout):
                    await ws.close()
                if not ws.transport.is_closing():
                    ws.transport.abort()

    async def _read(self, ws: Any, pipe: CommitPipeline) -> Decision:
        try:
            while True:
                await self.ctx.wait_ready()  # paused: the queue fills, reading stops
                message = await ws.recv()
                event = self._message(message)
                if event is not None:
                    await pipe.put([event], size=len(message))
                    self.policy.progressed()
                if self.done:
                    return self.policy.on_ws_close(1000, done=True)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else ""
            return self.policy.on_ws_close(code, reason=reason)

    def _message(self, message: str | bytes) -> CloudEvent | None:
        self.messages += 1
        try:
            payload: Any = orjson.loads(message)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            self.ctx.reject("malformed_json", run_id=self.run_id, position=self.messages)
            return None
        event = demorun_event(
            self.run_id, payload, base_url=self.src.public_base_url, prefix=self.ctx.type_prefix
        )
        if payload.get("type") == "done":
            self.done = True
        if event is None and payload.get("type") not in ("frame", "stream_frame", "screenshot"):
            self.ctx.reject("unknown_message", run_id=self.run_id, position=self.messages)
        return event

    async def _finish(self, decision: Decision) -> str:
        if decision.action is Action.DONE:
            self.log.info("arga.run_finished", events=self.events)
            return "done"
        if decision.alert or decision.reason == "not_found":
            missing = decision.reason == "not_found"
            await self.src.alert(self.ctx, self.run_id, "demorun", decision.detail, missing=missing)
        else:
            self.ctx.metrics.errors.labels(self.ctx.name, "source", decision.reason).inc()
            self.log.warning("arga.stream_stopped", reason=decision.reason, detail=decision.detail)
        return decision.reason

    async def gap_fill(self) -> int:
        """Emit ``events_json`` (and ``done`` for a terminal run) of the demo run."""
        run = await self.src.fetch_run(
            self.ctx, self.log, self.run_id, f"/demo-runner/runs/{self.run_id}"
        )
        if run is None:
            return 0
        events = demorun_from_run(
            self.run_id, run, base_url=self.src.public_base_url, prefix=self.ctx.type_prefix
        )
        if not events:
            return 0
        if events[-1].type.endswith("arga.demorun.done"):
            self.done = True
        statuses = await self.ctx.emit_many(events)
        new = sum(1 for s in statuses if s.value == "appended")
        if new:
            self.log.info("arga.gap_filled", new=new, seen=len(events) - new)
        return new
