"""The event log: what sources use (append with dedupe, backpressure) and what readers
use (read by position, wait for new events), plus retention.

Appends are :class:`~argbridge.journal.ops.Append` ops committed by the shared
:class:`~argbridge.journal.writer.Writer`; an append returns once its group's synced
write batch is durable. Dedupe: an id is known while its event is retained and, as a
tombstone, for ``dedupe_window`` after retention deleted it.

Every append is first admitted by the :class:`~argbridge.journal.backpressure.PauseSignal`
against the backlog's hard bound (cap + max(20 %, 1,000 events) / + max(20 %, 1 MiB)): a
stream waits for room, a caller that cannot wait (``wait=False``, a webhook) gets
:class:`~argbridge.journal.backpressure.IntakePaused` (503). Reads can be bounded in
bytes as well as in events (``max_bytes``), so a sink worker holds a bounded amount.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import anyio.lowlevel

from argbridge.clock import Clock
from argbridge.errors import JournalClosed
from argbridge.events import CloudEvent
from argbridge.journal import store
from argbridge.journal.backpressure import PauseSignal
from argbridge.journal.engine import Engine
from argbridge.journal.ops import Append, Op, Retention, SetState, SetStateAfter
from argbridge.journal.records import (
    AppendStatus,
    EncodedEvent,
    JournalRecord,
    encoded,
    stored_record,
)
from argbridge.journal.writer import ReadThread, Writer


def decode_records(rows: Sequence[tuple[int, bytes]]) -> list[JournalRecord]:
    """Records of stored ``(seq, value)`` rows (nothing decoded beyond the header)."""
    stored = stored_record
    unpack, header = store.EVENT_HEADER.unpack_from, store.EVENT_HEADER.size
    out = []
    for seq, value in rows:
        at, n = unpack(value)  # store.unpack_event, inlined: once per event a sink reads
        out.append(stored(seq, at, value[header : header + n], value[header + n :]))
    return out


class EventLog:
    """Append, dedupe, read by position, retention and backpressure."""

    def __init__(
        self,
        writer: Writer,
        reads: ReadThread,
        *,
        clock: Clock,
        max_backlog_events: int,
        max_backlog_bytes: int,
        resume_ratio: float,
        retain_delivered: float,
        dedupe_window: float,
        pause: PauseSignal | None = None,
    ) -> None:
        self._writer = writer
        self._reads = reads
        self.clock = clock
        self.max_backlog_events = max_backlog_events
        self.max_backlog_bytes = max_backlog_bytes
        self.resume_ratio = resume_ratio
        self.retain_delivered = retain_delivered
        self.dedupe_window = dedupe_window
        self.pause = pause or PauseSignal(max_backlog_events, max_backlog_bytes, resume_ratio)

    # -- sources -----------------------------------------------------------------------

    async def append(self, event: CloudEvent, *, wait: bool = True) -> AppendStatus:
        """Journal one event durably; returns once committed (or known as duplicate).

        Waits while the backlog is at its hard bound (or intake is held: disk full); with
        ``wait=False`` raises :class:`~argbridge.journal.backpressure.IntakePaused`
        instead, also when its own commit finds the disk full."""
        item = encoded(event)
        writer, pause = self._writer, self.pause
        size = item.size
        if not pause.try_admit(size):  # no room now (or held): wait for it, or refuse
            n, size = await pause.admit((size,), wait=wait)
            if n == 0:
                raise JournalClosed("the journal is closed")  # woken by close, not by room
        try:
            return await writer.wait(writer.enqueue(Append(*item)), nowait=not wait)
        finally:
            pause.release(1, size)

    async def append_many(
        self, events: Sequence[CloudEvent], *, wait: bool = True
    ) -> list[AppendStatus]:
        """Journal several events; they share the group commit with concurrent appends
        (admitted under the hard bound in as many steps as it takes)."""
        return await self.append_encoded([encoded(e) for e in events], wait=wait)

    async def append_encoded(
        self,
        items: Sequence[EncodedEvent],
        *,
        wait: bool = True,
        state: tuple[str, str] | None = None,
    ) -> list[AppendStatus]:
        """:meth:`append_many` of events a reader encoded as it read them
        (:func:`~argbridge.journal.records.encoded`). ``state``: a ``(key, value)`` of
        the state store written with the last of them, only if all of them were
        journaled (:class:`~argbridge.journal.ops.SetStateAfter`: a stream's resume
        point, without a group commit or a wait of its own); with no items, written
        alone."""
        writer, pause = self._writer, self.pause
        if not items:
            if state is not None:
                await writer.submit(SetState(*state))
            return []
        sizes = [item.size for item in items]
        results: list[AppendStatus] = []
        while len(results) < len(items):
            start = len(results)
            n, size = await pause.admit(sizes[start:], wait=wait)
            if n == 0:
                raise JournalClosed("the journal is closed")  # woken by close, not by room
            ops: list[Op[Any]] = []
            try:
                for item in items[start : start + n]:
                    ops.append(writer.enqueue(Append(*item)))
                if state is not None and start + n == len(items):
                    ops.append(writer.enqueue(SetStateAfter(*state, ops)))
                for op in ops:
                    result = await writer.wait(op, nowait=not wait)
                    if type(op) is Append:
                        results.append(result)
            except BaseException:
                # Cancelled or failed: withdraw the ops nobody waits for any more.
                writer.withdraw(ops)
                raise
            finally:
                pause.release(n, size)
        return results

    # -- readers -----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._writer.mirror.last_seq

    @property
    def first_seq(self) -> int:
        """The oldest retained seq (0 when the log is empty)."""
        return self._writer.mirror.first_seq

    async def wait_for_events(self, after_seq: int) -> None:
        """Return once an event with ``seq > after_seq`` has been committed."""
        await self._writer.wait_appended(after_seq)

    async def read_after(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        """Up to ``limit`` retained events with ``seq > after_seq``, oldest first; with
        ``max_bytes``, no more than that many bytes of them (their JSON size), but at
        least one event however large."""
        writer = self._writer
        rows: list[tuple[int, bytes]] | None = None
        if not (writer.closed or writer.db_down):  # else the read thread refuses, as ever
            if after_seq >= writer.mirror.last_seq:
                # Nothing committed after it: no read in the worker thread (a sink worker
                # that acks in the background reads on from what it delivered, caught
                # up after nearly every batch of live traffic).
                rows = []
            else:
                rows = writer.tail.read(after_seq, limit, max_bytes, writer.mirror.first_seq)
        if rows is None:
            # Not among the last committed events: the database, in the read thread.
            rows = await self._reads.run(
                lambda db: store.read_events(db, after_seq, limit, max_bytes)
            )
        else:
            await anyio.lowlevel.checkpoint()
        return decode_records(rows)

    async def seq_of(self, event_id: str) -> int | None:
        """The seq ``event_id`` was journaled at, while the id is known (retained, or a
        tombstone after retention: see ``dedupe_window``); else ``None``."""
        key = store.id_key(event_id)
        raw = await self._reads.run(lambda db: db.get(key))
        return None if raw is None else store.unpack_index(raw)[0]

    async def first_seq_since(self, since: float) -> int | None:
        """The first retained seq appended at or after ``since`` (for replay)."""
        lo, hi = self.first_seq, self.last_seq
        if not lo:
            return None
        return await self._reads.run(lambda db: _first_since(db, lo, hi, since))

    # -- retention and backpressure ----------------------------------------------------

    async def run_retention(self, limit: int = 10_000) -> int:
        """Delete up to ``limit`` delivered, expired events and expired tombstones."""
        m = self._writer.mirror
        now = self.clock.time()
        low = m.min_cursor() if m.cursors else m.last_seq
        op = Retention(low, now - self.retain_delivered, now - self.dedupe_window, limit)
        return await self._writer.submit(op)

    def update_pause(self) -> None:
        m = self._writer.mirror
        events = m.last_seq - m.min_cursor() if m.cursors else 0
        size = m.backlog_bytes if m.cursors else 0
        self.pause.update(events, size)


def _first_since(db: Engine, lo: int, hi: int, since: float) -> int | None:
    """Binary search over the dense retained range ``lo..hi`` (appended_at never
    decreases with seq)."""

    def at(seq: int) -> float:
        raw = db.get(store.seq_key(seq))
        # Retention may have deleted the head meanwhile: treat it as older than anything.
        return float("-inf") if raw is None else store.event_appended_at(raw)

    seqs = range(lo, hi + 1)
    i = bisect.bisect_left(seqs, since, key=at)
    return None if i >= len(seqs) else seqs[i]
