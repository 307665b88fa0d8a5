"""Backpressure: the flag sources wait on while the journal's backlog is over its cap."""

from __future__ import annotations

import anyio


class PauseSignal:
    """Set while the slowest sink's backlog (events or bytes) is over its cap."""

    def __init__(self) -> None:
        self._paused = False
        self._resumed = anyio.Event()
        self._resumed.set()

    @property
    def is_paused(self) -> bool:
        return self._paused

    def _set(self, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        if paused:
            self._resumed = anyio.Event()
        else:
            self._resumed.set()

    def update(
        self, events: int, size: int, max_events: int, max_bytes: int, resume_ratio: float
    ) -> None:
        """Pause at a cap; resume only once both are back under ``resume_ratio`` of it."""
        if self._paused:
            low_events = max_events * resume_ratio
            low_bytes = max_bytes * resume_ratio
            self._set(not (events <= low_events and size <= low_bytes))
        else:
            self._set(events >= max_events or size >= max_bytes)

    async def wait_resumed(self) -> None:
        """Return at once when not paused, else when the backlog drains below the mark."""
        while self._paused:
            await self._resumed.wait()
