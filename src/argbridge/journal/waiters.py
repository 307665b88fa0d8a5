"""Where the journal writer's waiters wait, and how they are woken: in slices.

A waiter (a task waiting for its op to commit) does not own an event: waiters share one
``anyio.Event`` per slice of ``WAKE_SLICE`` (one Event per op was ~2 µs of the ~14 µs
of event-loop time per append). A :class:`Waiters` is one generation of them: the
writer keeps one for the queue (waiters whose op is not in a group yet), and a group
adopts the queue's when its leader gathers it (those waiters' ops are that group's), so
a group's commit wakes its own waiters and not the next group's.

:class:`Waker` wakes a generation ``WAKE_SLICE`` per event-loop iteration: the first
slice now, each next one from a ``call_soon`` callback. Resumed all at once, 64
appenders (~25 µs of loop time each) ran as one 1.5-2 ms burst ahead of any timer that
expired meanwhile (bench_journal's lag probe); a timer due in between now waits for one
slice. :meth:`Waker.settled` lets a leader gather its group only once the oldest
generation's waking is done, so a group holds all the waiters of the group that landed
before it.
"""

from __future__ import annotations

import asyncio
from collections import deque

import anyio

#: Waiters resumed per event-loop iteration.
WAKE_SLICE = 8


class Waiters:
    """One generation of waiters: their events, ``WAKE_SLICE`` waiters per event."""

    __slots__ = ("_room", "count", "slices")

    def __init__(self) -> None:
        self.slices: list[anyio.Event] = []
        self._room = 0
        #: Places handed out (waiters, though some may have left since).
        self.count = 0

    def slot(self) -> anyio.Event:
        """The event of the open slice (a waiter's place)."""
        if not self._room:
            self.slices.append(anyio.Event())
            self._room = WAKE_SLICE
        self._room -= 1
        self.count += 1
        return self.slices[-1]

    def take(self) -> list[anyio.Event]:
        """All the slices, leaving this generation empty."""
        slices, self.slices, self._room, self.count = self.slices, [], 0, 0
        return slices

    def adopt(self, other: Waiters) -> None:
        """Take ``other``'s waiters over (``other`` is left empty)."""
        self.slices, self._room, self.count = other.slices, other._room, other.count
        other.slices, other._room, other.count = [], 0, 0

    def take_first(self) -> anyio.Event | None:
        """The first slice alone (the rest stay), or None if there is none."""
        if not self.slices:
            return None
        if len(self.slices) == 1:
            self._room = 0
        self.count -= min(self.count, WAKE_SLICE)
        return self.slices.pop(0)


class Waker:
    """Wakes generations of waiters slice by slice; knows which are still being woken."""

    def __init__(self) -> None:
        #: One event per generation still being woken, oldest first (set when its last
        #: slice is).
        self._waking: deque[anyio.Event] = deque()

    def wake(self, slices: list[anyio.Event]) -> None:
        if not slices:
            return
        slices[0].set()
        if len(slices) > 1:
            woken = anyio.Event()
            self._waking.append(woken)
            asyncio.get_running_loop().call_soon(self._next, slices, 1, woken)

    def _next(self, slices: list[anyio.Event], k: int, woken: anyio.Event) -> None:
        slices[k].set()
        if k + 1 < len(slices):
            asyncio.get_running_loop().call_soon(self._next, slices, k + 1, woken)
            return
        woken.set()
        self._waking.remove(woken)

    async def settled(self) -> None:
        """Return once the oldest generation being woken (if any) has been woken to its
        last slice: the waiters of the group that landed before, not those of a group
        that landed since (their ops make the group after)."""
        if self._waking:
            await self._waking[0].wait()
