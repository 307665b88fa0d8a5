"""The event log: what sources use (append with dedupe, backpressure) and what readers
use (read by position, wait for new events), plus retention.

Appends are :class:`~argbridge.journal.ops.Append` ops committed by the shared
:class:`~argbridge.journal.writer.Writer`; an append returns once its group's synced
write batch is durable. Dedupe: an id is known while its event is retained and, as a
tombstone, for ``dedupe_window`` after retention deleted it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import plyvel

from argbridge.clock import Clock
from argbridge.events import CloudEvent
from argbridge.journal import store
from argbridge.journal.backpressure import PauseSignal
from argbridge.journal.ops import Append, Retention
from argbridge.journal.records import AppendStatus, JournalRecord, encode_event
from argbridge.journal.writer import ReadThread, Writer


def decode_records(rows: Sequence[tuple[int, bytes]]) -> list[JournalRecord]:
    """Records of stored ``(seq, value)`` rows (nothing decoded beyond the header)."""
    stored = JournalRecord.stored
    unpack = store.unpack_event
    out = []
    for seq, value in rows:
        at, attrs, data = unpack(value)
        out.append(stored(seq, at, attrs, data))
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
    ) -> None:
        self._writer = writer
        self._reads = reads
        self.clock = clock
        self.max_backlog_events = max_backlog_events
        self.max_backlog_bytes = max_backlog_bytes
        self.resume_ratio = resume_ratio
        self.retain_delivered = retain_delivered
        self.dedupe_window = dedupe_window
        self.pause = PauseSignal()

    # -- sources -----------------------------------------------------------------------

    async def append(self, event: CloudEvent) -> AppendStatus:
        """Journal one event durably; returns once committed (or known as duplicate)."""
        attrs, data = encode_event(event)
        writer = self._writer
        return await writer.wait(writer.enqueue(Append(event.id, attrs, data)))

    async def append_many(self, events: Sequence[CloudEvent]) -> list[AppendStatus]:
        """Journal several events; they share the group commit with concurrent appends."""
        writer = self._writer
        ops = [writer.enqueue(Append(e.id, *encode_event(e))) for e in events]
        return [await writer.wait(op) for op in ops]

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

    async def read_after(self, after_seq: int, limit: int) -> list[JournalRecord]:
        """Up to ``limit`` retained events with ``seq > after_seq``, oldest first."""
        rows = await self._reads.run(lambda db: store.read_events(db, after_seq, limit))
        return decode_records(rows)

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
        self.pause.update(
            events, size, self.max_backlog_events, self.max_backlog_bytes, self.resume_ratio
        )


def _first_since(db: plyvel.DB, lo: int, hi: int, since: float) -> int | None:
    """Binary search over the dense retained range ``lo..hi`` (appended_at never
    decreases with seq)."""

    def at(seq: int) -> float:
        raw = db.get(store.seq_key(seq))
        # Retention may have deleted the head meanwhile: treat it as older than anything.
        return float("-inf") if raw is None else store.event_appended_at(raw)

    seqs = range(lo, hi + 1)
    i = bisect.bisect_left(seqs, since, key=at)
    return None if i >= len(seqs) else seqs[i]
