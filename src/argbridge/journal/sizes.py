"""The sizes of the backlog's events in memory: bytes between two positions without a read.

The writer keeps the backlog in bytes (backpressure on ``max_backlog_bytes``): when the
lowest sink cursor moves, the bytes of the events it passed come off the backlog. Reading
those events back from LevelDB to learn their sizes was a second read of every delivered
event on the event loop (bench_sinks: a quarter of the Kafka sink's CPU went to its acks).

:class:`SizeIndex` keeps the running total of the committed events' sizes by seq, from
about the lowest cursor to the newest event: 8 bytes per event of the backlog, at most
``cap`` events (the backlog's hard bound keeps it far below that by default). A range it
does not cover (a rewind below it, a backlog past ``cap``) is for the caller to read from
the database; the index never guesses.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from itertools import accumulate

#: Events the index covers at most (8 bytes each): 8 MiB.
DEFAULT_CAP = 1 << 20
#: Entries below the lowest cursor dropped at once (one copy of the rest of the array).
_TRIM_AT = 4096


class SizeIndex:
    """Running totals of event sizes for the seqs ``lo .. hi`` (see :meth:`between`)."""

    __slots__ = ("_cum", "_dead", "_start", "cap")

    def __init__(self, after_seq: int = 0, *, cap: int = DEFAULT_CAP) -> None:
        self.cap = cap
        #: ``_cum[i]``: bytes of the events ``_start + 1 .. _start + i`` (``_cum[0] == 0``).
        self._start = after_seq
        self._cum = array("q", [0])
        #: Leading entries no longer covered (dropped lazily, see :meth:`trim`).
        self._dead = 0

    @property
    def lo(self) -> int:
        return self._start + self._dead

    @property
    def hi(self) -> int:
        return self._start + len(self._cum) - 1

    def reset(self, after_seq: int) -> None:
        """Cover nothing; the next events are those after ``after_seq``."""
        self._start = after_seq
        self._cum = array("q", [0])
        self._dead = 0

    def extend(self, first_seq: int, sizes: Iterable[int]) -> None:
        """Add the sizes of the events ``first_seq, first_seq + 1, ...`` (committed).

        Events that do not follow :attr:`hi`, or that would take the index past ``cap``,
        restart it after them: ranges before them are then read from the database."""
        sizes = list(sizes)
        if not sizes:
            return
        cum = self._cum
        if first_seq != self.hi + 1 or len(cum) - 1 - self._dead + len(sizes) > self.cap:
            self.reset(first_seq - 1 + len(sizes))
            return
        totals = accumulate(sizes, initial=cum[-1])
        next(totals)
        cum.extend(totals)

    def trim(self, seq: int) -> None:
        """Forget the events up to ``seq`` (the lowest cursor passed them)."""
        dead = min(seq, self.hi) - self._start
        if dead <= self._dead:
            return
        self._dead = dead
        if dead >= _TRIM_AT and 2 * dead >= len(self._cum):
            self._cum = self._cum[dead:]
            self._start += dead
            self._dead = 0

    def between(self, lo: int, hi: int) -> int | None:
        """Bytes of the events ``lo < seq <= hi``, or ``None`` when not covered."""
        if lo < self.lo or hi > self.hi or lo > hi:
            return None
        return self._cum[hi - self._start] - self._cum[lo - self._start]
