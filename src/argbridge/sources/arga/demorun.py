"""Follows one demo run's WebSocket feed (``WSS /demo-runner/runs/{run_id}/stream?token=``).

Owns the WebSocket transport of the :class:`~argbridge.sources.follower.StreamFollower`
skeleton for Arga, with the ``websockets`` library *without* its ``async for ws in
connect()`` reconnect loop (it reconnects with zero delay after an accepted-then-closed
connection, protocols.md §2): each attempt is one ``connect()`` inside the source's
stream cap, and :class:`~argbridge.reconnect.ReconnectPolicy` decides what follows.
Close 1008 (or a 401/403 handshake) → exactly one attempt, then stop and the run's
alert (``argbridge.source.auth_failed``, or ``run_not_found`` for a 1008 saying "not
found" or a 4404), also when the run turned out finished (the close arrived while it was
gap-filled: reported, not taken for a clean end). Other closes →
backoff and reconnect. After every connect the run's ``events_json`` is fetched from
``GET /demo-runner/runs/{run_id}`` (the feed is live-only), so nothing between two
sessions is lost; event ids make the overlap disappear. ``done`` ends the subscription.

Keepalive pings are on, ``max_size``/``max_queue`` are bounded (when the queue is full
the client stops reading: TCP backpressure), permessage-deflate is configurable, proxies
from the environment are ignored (``proxy=None``), and the ``?token=`` never reaches a
log line or an exception message (only exception class names and close codes are logged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection

from argbridge.events import CloudEvent
from argbridge.journal.records import EncodedEvent, encode_parts
from argbridge.normalize.arga import demorun_event, demorun_from_run, demorun_parts
from argbridge.reconnect import (
    AUTH_CLOSE_CODES,
    NOT_FOUND_CLOSE_CODES,
    Action,
    Decision,
    ReconnectPolicy,
)
from argbridge.sources.arga.api import ArgaApi, fetch_run
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import StreamAlert, StreamSlots
from argbridge.sources.pipeline import CommitPipeline
from argbridge.sources.state import StateStore
from argbridge.sources.wsconnect import WsFollowerBase, WsOptions, ws_attempt

REFUSAL_CLOSE_CODES = AUTH_CLOSE_CODES | NOT_FOUND_CLOSE_CODES
N = TypeVar("N")


class DemoRunFollower(WsFollowerBase):
    """The WebSocket subscription of one demo run."""

    def __init__(
        self,
        api: ArgaApi,
        ctx: SourceContext,
        run_id: str,
        *,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: StreamAlert,
        state: StateStore | None = None,
    ) -> None:
        super().__init__(
            ctx, run_id, stream="demorun", policy=policy, slots=slots, alert=alert, log_ns="arga"
        )
        self.api = api
        self.run_id = run_id
        self.messages = 0
        self.done = False
        #: Cluster mode: where the id of the last committed event is kept (the run's
        #: record), so a new owner's gap-fill skips what was already delivered.
        self.state = state
        self.position: str | None = None

    async def prepare(self) -> Decision | None:
        if self.state is not None:
            self.position = await self.state.get_state(self._position_key)
        return None

    @property
    def _position_key(self) -> str:
        return f"arga:{self.ctx.name}:demo:{self.run_id}:last_event"

    @property
    def store(self) -> StateStore:
        """:class:`~argbridge.sources.pipeline.ResumePoint` (only one with a store)."""
        assert self.state is not None
        return self.state

    def state_for(self, event_id: str) -> tuple[str, str] | None:
        """The last event id to persist with the events before it."""
        if self.state is None or event_id == self.position:
            return None
        return (self._position_key, event_id)

    def committed(self, event_id: str) -> None:
        self.position = event_id

    async def _committed(self, event_id: str) -> None:
        state = self.state_for(event_id)
        if state is not None:
            await self.store.set_state(*state)
            self.committed(event_id)

    def _url(self) -> str:
        base = self.api.base_url.rstrip("/")
        scheme = "wss" if base.startswith("https://") else "ws"
        host = base.split("://", 1)[1]
        token = quote(self.api.api_key, safe="")
        return (
            f"{scheme}://{host}/demo-runner/runs/{quote(self.run_id, safe='')}/stream?token={token}"
        )

    async def connect(self) -> Decision:
        return await ws_attempt(
            self._url(),
            WsOptions.of(self.api.websocket, self.api.ws_headers),
            self.policy,
            self.ctx.clock,
            self._ws_session,
        )

    async def _ws_session(self, ws: ClientConnection) -> Decision:
        # The feed is live-only: every session first fetches the run's history.
        async def read(pipe: CommitPipeline) -> Decision:
            if self.done:
                # A finished run: close the feed (bounded by close_timeout) and look at
                # how the server closed it. A 1008 ("Test run not found", a refused
                # token) that arrived while the run was gap-filled is still reported;
                # the close handshake makes that independent of timing.
                await ws.close()
                if ws.close_code in REFUSAL_CLOSE_CODES:
                    return self.policy.on_ws_close(ws.close_code, reason=ws.close_reason or "")
                return Decision(Action.DONE, "done")
            return await self._read(ws, pipe)

        return await self.session(read, gap_fill=True, resume=self if self.state else None)

    def _message(self, message: str | bytes) -> CloudEvent | None:
        return self._normalised(message, demorun_event)

    def _encoded(self, message: str | bytes) -> EncodedEvent | None:
        """:meth:`_message` straight to the journal's bytes (:func:`demorun_parts`)."""
        parts = self._normalised(message, demorun_parts)
        return None if parts is None else encode_parts(*parts)

    def _normalised(self, message: str | bytes, normalise: Callable[..., N | None]) -> N | None:
        """``normalise`` (:func:`demorun_event` or :func:`demorun_parts`) of the message;
        ``done`` ends the run, and a message that is no event and no frame is counted."""
        payload = self._payload(message)
        if payload is None:
            return None
        out = normalise(
            self.run_id, payload, base_url=self.api.public_base_url, prefix=self.ctx.type_prefix
        )
        if payload.get("type") == "done":
            self.done = True
        if out is None and payload.get("type") not in ("frame", "stream_frame", "screenshot"):
            self.ctx.reject("unknown_message", run_id=self.run_id, position=self.messages)
        return out

    def _payload(self, message: str | bytes) -> dict[str, Any] | None:
        """The message's JSON object (a message that is not one is counted)."""
        self.messages += 1
        try:
            payload: Any = orjson.loads(message)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            self.ctx.reject("malformed_json", run_id=self.run_id, position=self.messages)
            return None
        return payload

    async def gap_fill(self) -> int:
        """Emit ``events_json`` (and ``done`` for a terminal run) of the demo run."""
        run = await fetch_run(
            self.api, self.ctx, self.log, self.run_id, f"/demo-runner/runs/{self.run_id}"
        )
        if run is None:
            return 0
        events = demorun_from_run(
            self.run_id, run, base_url=self.api.public_base_url, prefix=self.ctx.type_prefix
        )
        if not events:
            return 0
        if events[-1].type.endswith("arga.demorun.done"):
            self.done = True
        ids = [e.id for e in events]
        if self.position in ids:  # recorded: delivered by the previous owner already
            events = events[ids.index(self.position) + 1 :]
            if not events:
                return 0
        statuses = await self.ctx.emit_many(events)
        await self._committed(events[-1].id)
        new = sum(1 for s in statuses if s.value == "appended")
        if new:
            self.log.info("arga.gap_filled", new=new, seen=len(events) - new)
        return new
