"""Follows one validation run's results SSE stream (``GET /validate/{run_id}/results``).

Owns Arga's part of the SSE follower (:class:`~argbridge.sources.ssefollow.SSEFollowerBase`,
shared with the generic ``sse`` source, on the
:class:`~argbridge.sources.follower.StreamFollower` skeleton): the request, decoded
events → :func:`results_parts` (the journal's bytes of :func:`results_event`, without
the ``CloudEvent``), and the gap-fill from ``GET /runs/{run_id}`` after every
reconnect (deterministic ids drop the overlap). The shared part persists the
``Last-Event-ID`` once the events before it are committed (a restarted daemon resumes
from it) and stops reading while the journal signals backpressure, so TCP pushes back
on the server and memory stays bounded by the socket buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, TypeVar

import httpx
import orjson

from argbridge.events import CloudEvent, now_rfc3339
from argbridge.journal.records import EncodedEvent, encode_parts, encoded
from argbridge.normalize.arga import (
    is_terminal_results_event,
    iter_results_from_run,
    results_event,
    results_parts,
)
from argbridge.reconnect import Decision, ReconnectPolicy
from argbridge.sources.arga.api import ArgaApi, fetch_run
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import StreamAlert, StreamSlots
from argbridge.sources.ssefollow import SSEFollowerBase
from argbridge.sources.state import StateStore
from argbridge.sse import SSEDecoder, SSEEvent

N = TypeVar("N")

#: Events of a gap-fill normalised and committed at a time.
GAP_FILL_SLICE = 256


def last_id_key(source: str, run_id: str) -> str:
    return f"arga:{source}:sse:{run_id}:last_id"


class ResultsFollower(SSEFollowerBase):
    """The SSE subscription of one validation run; ``initial`` is a results stream
    already open (the answer of a start request), read before any reconnect; ``state``
    keeps the ``Last-Event-ID`` (default: the journal's state; in cluster mode the run's
    :class:`~argbridge.cluster.lease.RunLease`)."""

    def __init__(
        self,
        api: ArgaApi,
        ctx: SourceContext,
        run_id: str,
        *,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: StreamAlert,
        initial: httpx.Response | None = None,
        state: StateStore | None = None,
    ) -> None:
        super().__init__(
            ctx,
            run_id,
            stream="results",
            log_ns="arga",
            state=state if state is not None else ctx.journal,
            last_id_key=last_id_key(ctx.name, run_id),
            policy=policy,
            slots=slots,
            alert=alert,
        )
        self.api = api
        self.run_id = run_id
        self._initial = initial

    async def prepare(self) -> Decision | None:
        await super().prepare()
        self.reconnected = bool(self.last_id)  # a restart resumes: fill what we missed
        initial, self._initial = self._initial, None
        if initial is None:
            return None
        return await self.sse_session(initial, gap_fill=False)

    async def connect(self) -> Decision:
        try:
            async with self.api.client.stream(
                "GET", f"/validate/{self.run_id}/results", headers=self.request_headers()
            ) as response:
                return await self.sse_session(response)
        except httpx.TransportError as exc:
            return self.policy.on_network_error(type(exc).__name__)

    async def finished(self) -> None:
        # A reconnect may have come back to a terminal run: one last catch-up.
        await self.gap_fill(include_terminal=True)

    def decode(self, events: list[SSEEvent], decoder: SSEDecoder) -> list[CloudEvent]:
        return self._normalised(events, decoder, results_event)

    def encode(self, events: list[SSEEvent], decoder: SSEDecoder) -> list[EncodedEvent]:
        """:meth:`decode` straight to the journal's bytes (:func:`results_parts`)."""
        return [encode_parts(*parts) for parts in self._normalised(events, decoder, results_parts)]

    def _normalised(
        self, events: list[SSEEvent], decoder: SSEDecoder, normalise: Callable[..., N]
    ) -> list[N]:
        """``normalise`` (:func:`results_event` or :func:`results_parts`) of each event."""
        base_url, prefix, now = self.api.public_base_url, self.ctx.type_prefix, now_rfc3339()
        return [
            normalise(
                self.run_id,
                payload,
                upstream_id=upstream_id,
                base_url=base_url,
                prefix=prefix,
                now=now,
            )
            for payload, upstream_id in self._payloads(events, decoder)
        ]

    def _payloads(
        self, events: list[SSEEvent], decoder: SSEDecoder
    ) -> Iterator[tuple[dict[str, Any], str | None]]:
        """Each event's JSON object and upstream id (a frame that is not a JSON object
        is counted and skipped); sets :attr:`terminal` on the run's terminal event."""
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
            yield payload, (ev.id if ev.own_id and ev.id else None)
            if is_terminal_results_event(payload):
                self.terminal = True

    async def gap_fill(self, *, include_terminal: bool = False) -> int:
        """Emit the step results of ``GET /runs/{run_id}`` (and its terminal event at the
        end, so the terminal event stays last); returns how many were new. Failures
        are logged: the live stream still runs."""
        run = await fetch_run(self.api, self.ctx, self.log, self.run_id, f"/runs/{self.run_id}")
        if run is None:
            return 0
        events = iter_results_from_run(
            self.run_id,
            run,
            base_url=self.api.public_base_url,
            prefix=self.ctx.type_prefix,
            include_terminal=include_terminal,
        )
        new = seen = 0
        # In slices, in order (the terminal event stays last), encoded as they are built:
        # the catch-up at the end of every run re-reads the whole run, and thousands of
        # normalised events alive at once, per finishing run, are what a drain's peak
        # was made of (bench_bounds --probe: ~9,000 CloudEvents mid-drain).
        while items := [encoded(e) for e in islice(events, GAP_FILL_SLICE)]:
            statuses = await self.ctx.emit_encoded(items)
            new += sum(1 for s in statuses if s.value == "appended")
            seen += len(items)
        if new:
            self.log.info("arga.gap_filled", new=new, seen=seen - new)
        return new
