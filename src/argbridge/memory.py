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
``settle`` seconds. A trim costs a few ms; it never runs while a backlog drains, when
the kept memory is what saves page faults.
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
    _burst: bool = False
    _quiet_since: float | None = None

    def observe(self, backlog: int, now: float) -> bool:
        """Feed the slowest sink's backlog; ``True``: trim now (once per burst)."""
        if backlog > self.burst_events:
            self._burst = True
        if not self._burst or backlog > self.quiet_events:
            self._quiet_since = None
            return False
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < self.settle:
            return False
        self._burst = False
        self._quiet_since = None
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
