"""Reader → committer hand-off for the Arga stream readers.

Owns :class:`CommitPipeline`: the network reader queues normalised events, encoded as
it read them (:class:`~argbridge.journal.records.EncodedEvent`: the bytes the journal
stores, so no decoded payload stays alive while an event waits), and a committer task
journals everything queued so far in one group commit while the reader keeps reading.
A commit (an fsync) therefore costs once per burst instead of once per network chunk or
WebSocket message. ``marker`` (the SSE last event id) is recorded through the
stream's :class:`ResumePoint`: its state write goes to the journal with the batch it
follows, committed in the same group and only if every event of the batch is in
(:meth:`~argbridge.journal.log.EventLog.append_encoded`'s ``state``), so a persisted
resume point never runs ahead of the journal and costs no commit of its own.

The pipeline is bounded by the upstream bytes of the events it holds, queued or in the
batch being committed (``max_bytes``, default 256 KiB): when it is full the reader
waits, stops reading, and TCP pushes back on the server. That bound is also what a
reader can still hand to the journal after the journal signals backpressure, and what
it holds in memory while the journal's hard bound keeps it waiting (encoded: ~1.3x the
upstream bytes; decoded, as it was before, ~4x): with 1 MiB, 12 streams held the
daemon's RSS at 128 MiB while paused, 109 MiB with 256 KiB (bench/bench_bounds.py
--quick). The batch being committed counts: it used to leave the count when its commit
began, so a stream held twice ``max_bytes`` while the journal kept it waiting (a paused
journal, or one draining at its hard bound, keeps every stream's pipeline full).
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import anyio.abc

from argbridge.journal.records import EncodedEvent
from argbridge.sources.base import SourceContext
from argbridge.sources.state import StateStore

_NO_MARKER = object()
DEFAULT_MAX_BYTES = 256 * 1024


class ResumePoint(Protocol):
    """Where a stream resumes from, persisted through the committer: in the batch's group
    commit when :attr:`store` is the journal the batch goes to (the usual case), else
    (a cluster lease keeps it) written to :attr:`store` once the batch is in."""

    @property
    def store(self) -> StateStore:
        """Where the resume point is kept."""
        ...

    def state_for(self, marker: Any) -> tuple[str, str] | None:
        """The state ``(key, value)`` that records ``marker``, or ``None`` when it is
        already recorded."""
        ...

    def committed(self, marker: Any) -> None:
        """``marker``'s state (from :meth:`state_for`) is durable."""
        ...


class CommitPipeline:
    """Use inside a task group: ``tg.start_soon(p.run)``, ``await p.put(...)``, then
    ``p.close()`` and let the task group wait for the last commit."""

    def __init__(
        self,
        ctx: SourceContext,
        resume: ResumePoint | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_events: int = 4096,
    ) -> None:
        self.ctx = ctx
        self.resume = resume
        self.max_bytes = max_bytes
        self.max_events = max_events
        # The count bound is only a backstop; bytes are the real bound.
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[list[EncodedEvent], Any, int]
        ](100_000)
        self._queued_bytes = 0
        self._space = anyio.Event()
        self.committed = 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def put(
        self, events: list[EncodedEvent], marker: Any = _NO_MARKER, size: int = 0
    ) -> None:
        """Queue ``events`` read from ``size`` upstream bytes (``events`` may be empty to
        move only the marker); waits while the queue holds ``max_bytes``."""
        while self._queued_bytes and self._queued_bytes + size > self.max_bytes:
            if self._space.is_set():
                self._space = anyio.Event()
            await self._space.wait()
        self._queued_bytes += size
        # No scheduling pass when there is room (a pass per WebSocket message counts).
        self._send.send_nowait((events, marker, size))

    def close(self) -> None:
        """No more input: the committer commits what is queued, then returns."""
        self._send.close()

    async def run(self) -> None:
        async with self._receive:
            while True:
                try:
                    first = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                batch, marker, taken = self._gather(first)
                del first
                await self._commit(batch, marker, taken)
                # Nothing of a committed batch stays referenced while the next one is
                # awaited (an idle stream would keep its last batch alive).
                del batch

    def _gather(
        self, first: tuple[list[EncodedEvent], Any, int]
    ) -> tuple[list[EncodedEvent], Any, int]:
        """``first`` and everything queued behind it (up to ``max_events``), the newest
        marker among them, and their upstream bytes."""
        events, marker, taken = first
        batch = list(events)
        while len(batch) < self.max_events:
            try:
                more, next_marker, more_size = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            batch.extend(more)
            taken += more_size
            if next_marker is not _NO_MARKER:
                marker = next_marker
        return batch, marker, taken

    async def _commit(self, batch: list[EncodedEvent], marker: Any, taken: int) -> None:
        resume, ctx = self.resume, self.ctx
        state = None
        if marker is not _NO_MARKER and resume is not None:
            state = resume.state_for(marker)
        with_batch = state is not None and resume is not None and resume.store is ctx.journal
        if batch or with_batch:
            await ctx.emit_encoded(batch, state=state if with_batch else None)
            self.committed += len(batch)
        # Room for the reader once the batch is journaled (what the reader queued
        # meanwhile, up to the bound, is the next batch).
        self._queued_bytes -= taken
        self._space.set()
        if state is not None and resume is not None:
            if not with_batch:
                await resume.store.set_state(*state)
            resume.committed(marker)
