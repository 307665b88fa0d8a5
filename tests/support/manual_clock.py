"""A clock tests drive by hand: ``sleep`` blocks until the test advances time.

Sinks take a :class:`argbridge.clock.Clock`; with this one a retry schedule of hours runs
in microseconds and every wait is observable (``next_sleep``).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel


class ManualClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 1_000.0
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self.sleeps: list[float] = []
        self._new_sleep = anyio.Event()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (self._mono + seconds, event)
        self._sleepers.append(entry)
        self.sleeps.append(seconds)
        self._new_sleep.set()
        self._new_sleep = anyio.Event()
        try:
            await event.wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds
        for entry in list(self._sleepers):
            if entry[0] <= self._mono + 1e-9:
                self._sleepers.remove(entry)
                entry[1].set()

    @property
    def pending(self) -> list[float]:
        """Remaining time of every pending sleep."""
        return sorted(d - self._mono for d, _ in self._sleepers)

    async def wait_sleeping(self, at_least: int = 1) -> None:
        """Until ``at_least`` tasks are sleeping on this clock."""
        while len(self._sleepers) < at_least:
            await self._new_sleep.wait()

    async def run_until(self, done: Callable[[], bool]) -> None:
        """Jump from deadline to deadline until ``done()``; after each jump, let the woken
        tasks run until they sleep again or ``done()`` holds."""
        while not done():
            await self.advance_to_next()
            while not done() and not self._sleepers:
                await anyio.lowlevel.checkpoint()  # a yield to the woken tasks, not a sleep

    async def advance_to_next(self) -> float:
        """Wait for a sleeper, then jump to the earliest deadline; returns the jump."""
        await self.wait_sleeping()
        step = max(0.0, min(self.pending))
        self.advance(step)
        return step
