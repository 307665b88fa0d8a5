"""Reader → committer hand-off for the Arga stream readers.

Owns :class:`CommitPipeline`: the network reader queues normalised events (a bounded
number of batches), and a committer task journals everything queued so far in one
group commit while the reader keeps reading. A commit (an fsync) therefore costs once
per burst instead of once per network chunk or message. ``marker`` (the SSE last event
id) is handed to ``on_committed`` only after the events before it are committed, so a
persisted resume point never runs ahead of the journal. The queue bound is what the
reader may hold beyond the journal: when it is full the reader waits, stops reading,
and TCP pushes back on the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from argbridge.events import CloudEvent
from argbridge.sources.base import SourceContext

_NO_MARKER = object()


class CommitPipeline:
    """Use inside a task group: ``tg.start_soon(p.run)``, ``await p.put(...)``, then
    ``p.close()`` and let the task group wait for the last commit."""

    def __init__(
        self,
        ctx: SourceContext,
        on_committed: Callable[[Any], Awaitable[None]] | None = None,
        *,
        max_batches: int = 64,
        max_events: int = 4096,
    ) -> None:
        self.ctx = ctx
        self.on_committed = on_committed
        self.max_events = max_events
        self._send, self._receive = anyio.create_memory_object_stream[tuple[list[CloudEvent], Any]](
            max_batches
        )
        self.committed = 0

    async def put(self, events: list[CloudEvent], marker: Any = _NO_MARKER) -> None:
        """Queue ``events`` (may be empty to move only the marker); waits while full."""
        try:
            # No scheduling pass when there is room (a pass per WebSocket message counts).
            self._send.send_nowait((events, marker))
        except anyio.WouldBlock:
            await self._send.send((events, marker))

    def close(self) -> None:
        """No more input: the committer commits what is queued, then returns."""
        self._send.close()

    async def run(self) -> None:
        async with self._receive:
            async for events, marker in self._receive:
                batch = list(events)
                while len(batch) < self.max_events:
                    try:
                        more, next_marker = self._receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    batch.extend(more)
                    if next_marker is not _NO_MARKER:
                        marker = next_marker
                if batch:
                    await self.ctx.emit_many(batch)
                    self.committed += len(batch)
                if marker is not _NO_MARKER and self.on_committed is not None:
                    await self.on_committed(marker)
