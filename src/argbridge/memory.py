"""Giving memory back after a burst: when to trim the heap, and the trim itself.

A burst (a backlog journaled while a sink was down, then drained) leaves the process
with freed memory it keeps: glibc returns heap pages to the kernel only from the top of
the heap and only above ``M_TRIM_THRESHOLD`` (32 MiB as the runtime tunes it, so that a
draining sink does not fault its batches back in), and a heap fragmented by a burst
rarely has a free top. ``malloc_trim(0)`` releases every free page, wherever it is
(``MADV_DONTNEED``), in every arena.

:class:`TrimPolicy` (pure: the runtime feeds it the backlog and the monotonic time)
decides when: once a burst is over (the slowest sink's backlog went above
``burst_events`` and is now back at or below ``quiet_events``) and has stayed over for
``settle`` seconds; then again while it stays quiet, 2 x, 4 x... ``settle`` later, up to
every ``every`` seconds (also under a steady load that never bursts). Memory is freed
after the first trim too (streams that ended, buffers of the drain): measured with
bench/bench_bounds.py --probe, one more trim 30 s after a drain gave back 5-8 MiB more.
A trim costs a few ms; it never runs while a backlog drains, when the kept memory is
what saves page faults. The runtime lets the journal's engine give back what it holds
first (``Journal.release_memory``: LevelDB's memtable flushed, the database reopened),
so that the trim returns that too.
"""

from __future__ import annotations

import ctypes
import gc
import platform
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TrimPolicy:
    """When to give memory back (see the module docstring)."""

    burst_events: int = 1000
    quiet_events: int = 100
    settle: float = 5.0
    #: While quiet, trim again after twice the previous gap (from ``settle`` after a
    #: burst), at most this long apart; ``0``: once per burst only.
    every: float = 60.0
    _burst: bool = False
    _quiet_since: float | None = None
    _next: float | None = None
    _gap: float = 0.0

    def observe(self, backlog: int, now: float) -> bool:
        """Feed the slowest sink's backlog; ``True``: trim now."""
        if backlog > self.burst_events:
            self._burst = True
        if backlog > self.quiet_events:
            self._quiet_since = None
            if self._burst:
                self._next = None  # a burst: its own schedule once it has drained
            return False
        if self._quiet_since is None:
            self._quiet_since = now
        if self._burst:
            if now - self._quiet_since < self.settle:
                return False
            self._burst = False
            self._gap = min(2 * self.settle, self.every)
            self._next = now + self._gap if self.every else None
            return True
        if not self.every:
            return False
        if self._next is None:
            self._gap = self.every
            self._next = now + self._gap
            return False
        if now < self._next:
            return False
        self._gap = min(2 * self._gap, self.every)
        self._next = now + self._gap
        return True


def _load_malloc_trim() -> Callable[[int], int] | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_size_t,), ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


_malloc_trim = _load_malloc_trim()


def give_back() -> bool:
    """Collect cyclic garbage, then return every free heap page to the kernel (glibc
    ``malloc_trim(0)``). ``False`` off glibc (the collection still runs)."""
    gc.collect()
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
