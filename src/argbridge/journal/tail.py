"""The last few committed events in memory, so a caught-up sink reads them without the
read thread.

Under live traffic a sink worker reads a handful of events right after they were
committed: each of those reads was a round trip to the journal's read thread (two
wake-ups) and a LevelDB iterator for data the writer had just held. The writer keeps the
rows (``(seq, stored value)``, the bytes it wrote) of its last groups here, bounded by
count and bytes (``TAIL_EVENTS``, ``TAIL_BYTES``); a read whose range starts inside the
tail is answered from it, anything older goes to the database as before. The tail is
dense and always ends at the journal's last seq, or it is empty: a group whose rows do
not continue it (or that moved ``last_seq`` without rows) empties it first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice

from argbridge.journal import store

#: Events kept at most (a few batches of a sink at a few hundred events a second) ...
TAIL_EVENTS = 256
#: ... and stored bytes at most.
TAIL_BYTES = 512 * 1024


class RecentEvents:
    """The newest committed ``(seq, stored value)`` rows, dense, ending at last seq."""

    def __init__(self, max_events: int = TAIL_EVENTS, max_bytes: int = TAIL_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._rows: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        #: Reads answered from the tail so far.
        self.hits = 0

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
        self._bytes = 0

    def extend(self, rows: Sequence[tuple[int, bytes]], last_seq: int) -> None:
        """Add a committed group's rows; ``last_seq`` is the journal's after it."""
        kept = self._rows
        if rows:
            if kept and kept[-1][0] + 1 != rows[0][0]:
                self.clear()
            kept.extend(rows)
            self._bytes += sum([len(v) for _, v in rows])
            while kept and (len(kept) > self.max_events or self._bytes > self.max_bytes):
                self._bytes -= len(kept.popleft()[1])
        if kept and kept[-1][0] != last_seq:
            self.clear()

    def read(
        self, after_seq: int, limit: int, max_bytes: int | None, first_seq: int
    ) -> list[tuple[int, bytes]] | None:
        """What :func:`store.read_events` would return, or ``None`` when the range does
        not start inside the tail, or starts before the oldest retained event
        (``first_seq``, 0 when retention emptied the log)."""
        kept = self._rows
        if not kept or limit <= 0:
            return None
        lo = kept[0][0]
        start = after_seq + 1
        if not first_seq or start < first_seq or start < lo or start > kept[-1][0]:
            return None  # (``first_seq`` 0: retention emptied the log)
        rows = store.take_events(islice(kept, start - lo, None), limit, max_bytes)
        self.hits += 1
        return rows
