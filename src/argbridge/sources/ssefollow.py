"""The SSE transport of the stream-follower skeleton, shared by the Arga results follower
and the generic ``sse`` source.

Owns :class:`SSEFollowerBase`: classifying a response head with the
:class:`~argbridge.reconnect.ReconnectPolicy` (status, content type, ``Retry-After``),
reading the body through one :class:`~argbridge.sse.SSEDecoder` per session into the
commit pipeline, the ``Last-Event-ID`` (resumed from the state store; persisted as the
pipeline's :class:`~argbridge.sources.pipeline.ResumePoint`, in the group commit of the
events before it and only if they are in), ``retry:`` as a floor under the backoff, the
memory bound per event (``max_frame``: an event past it is abandoned while it arrives,
counted as ``frame_too_large``), a truncated frame on a dropped connection (counted),
and backpressure (no read while the journal is paused). The events of a chunk are
decoded, normalised and encoded for the journal at once
(:class:`~argbridge.journal.records.EncodedEvent`): while they wait for their commit the
follower holds their bytes only, never their decoded payloads. A subclass turns decoded
events into CloudEvents (:meth:`SSEFollowerBase.decode`; or straight into the journal's
bytes, :meth:`SSEFollowerBase.encode`) and opens the request
(:meth:`~argbridge.sources.follower.StreamFollower.connect`, then :meth:`sse_session`).
"""

from __future__ import annotations

import abc
from typing import Any

import httpx

from argbridge.events import CloudEvent
from argbridge.journal.records import EncodedEvent, encoded
from argbridge.reconnect import Decision, ReconnectPolicy
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import StreamAlert, StreamFollower, StreamSlots
from argbridge.sources.pipeline import CommitPipeline
from argbridge.sources.state import StateStore
from argbridge.sse import SSEDecoder, SSEEvent

#: The default memory bound of one event (a base64 screenshot fits many times over).
DEFAULT_MAX_FRAME = 32 * 1024 * 1024


class SSEFollowerBase(StreamFollower):
    """One SSE subscription; see the module docstring."""

    def __init__(
        self,
        ctx: SourceContext,
        key: str,
        *,
        stream: str,
        log_ns: str,
        state: StateStore,
        last_id_key: str,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: StreamAlert,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        super().__init__(
            ctx, key, stream=stream, policy=policy, slots=slots, alert=alert, log_ns=log_ns
        )
        self.state = state
        self.last_id_key = last_id_key
        self.max_frame = max_frame
        self.last_id = ""
        self._queued_id = ""
        #: Set by :meth:`decode` on the event that ends the subscription.
        self.terminal = False

    @abc.abstractmethod
    def decode(self, events: list[SSEEvent], decoder: SSEDecoder) -> list[CloudEvent]:
        """CloudEvents of the decoded ``events`` (rejections counted); sets
        :attr:`terminal` on the last one."""

    def encode(self, events: list[SSEEvent], decoder: SSEDecoder) -> list[EncodedEvent]:
        """:meth:`decode`, encoded for the journal. A subclass whose normaliser builds
        the journal's bytes directly overrides this (the same bytes, no ``CloudEvent``)."""
        return [encoded(event) for event in self.decode(events, decoder)]

    def session_started(self) -> None:
        """A new session begins reading (e.g. reset per-session positions)."""
        return None

    async def prepare(self) -> Decision | None:
        self.last_id = await self.state.get_state(self.last_id_key) or ""
        self._queued_id = self.last_id
        return None

    def resume_fields(self) -> dict[str, Any]:
        return {"last_event_id": self.last_id or None}

    def request_headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "cache-control": "no-store"}
        if self.last_id:
            headers["last-event-id"] = self.last_id
        return headers

    async def sse_session(
        self, response: httpx.Response, *, gap_fill: bool | None = None
    ) -> Decision:
        """Classify ``response``'s head, then read its body; how the session ended."""
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
        self.session_started()

        async def read(pipe: CommitPipeline) -> Decision:
            return await self._read(response, decoder, pipe)

        return await self.session(read, resume=self, gap_fill=gap_fill)

    async def _read(
        self, response: httpx.Response, decoder: SSEDecoder, pipe: CommitPipeline
    ) -> Decision:
        try:
            async for chunk in response.aiter_bytes():
                batch = self._decode(decoder, chunk)
                if decoder.held_bytes > self.max_frame:
                    self._too_large(decoder.abandon(), decoder.bytes_fed)
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
                    run_id=self.key,
                    position=decoder.bytes_fed,
                    pending=decoder.pending_bytes,
                )
            return self.policy.on_network_error(type(exc).__name__)
        decoder.close()
        return self.policy.on_eof(terminal=self.terminal)

    def _decode(self, decoder: SSEDecoder, chunk: bytes) -> list[EncodedEvent]:
        events = decoder.feed(chunk)
        if not events:
            self.policy.set_server_retry(decoder.retry_ms)
            return []
        if any(len(ev.data) > self.max_frame for ev in events):  # completed within one read
            for ev in events:
                if len(ev.data) > self.max_frame:
                    self._too_large(len(ev.data), decoder.bytes_fed)
            events = [ev for ev in events if len(ev.data) <= self.max_frame]
        batch = self.encode(events, decoder)
        if batch:
            self.policy.progressed()
        self.policy.set_server_retry(decoder.retry_ms)
        return batch

    def _too_large(self, size: int, position: int) -> None:
        self.ctx.reject(
            "frame_too_large", run_id=self.key, position=position, held=size, limit=self.max_frame
        )

    @property
    def store(self) -> StateStore:
        return self.state

    def state_for(self, last_id: str) -> tuple[str, str] | None:
        """:class:`~argbridge.sources.pipeline.ResumePoint`: the ``Last-Event-ID`` to
        persist with the events before it (in their group commit)."""
        return None if last_id == self.last_id else (self.last_id_key, last_id)

    def committed(self, last_id: str) -> None:
        self.last_id = last_id
