"""A per-endpoint circuit breaker: closed → open after N consecutive failures → half-open
after a cooldown (one probe at a time) → closed on success / open again on failure.

Pure: the caller passes ``now`` (monotonic seconds from its injected clock).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.IntEnum):
    """Values match the ``argbridge_sink_circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(slots=True)
class CircuitBreaker:
    threshold: int = 5
    cooldown: float = 30.0
    #: Each re-open after a failed probe doubles the cooldown up to this bound.
    max_cooldown: float = 600.0
    failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False
    _state: BreakerState = BreakerState.CLOSED
    _current_cooldown: float = 0.0

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self.opened_at + self._current_cooldown:
            self._state = BreakerState.HALF_OPEN
            self.probe_in_flight = False
        return self._state

    def allow(self, now: float) -> bool:
        """Whether a request may go out now (in half-open: only the one probe)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def retry_at(self, now: float) -> float:
        """When a refused request should be tried again."""
        if self.state(now) is BreakerState.OPEN:
            return self.opened_at + self._current_cooldown
        return now

    def success(self) -> None:
        self._state = BreakerState.CLOSED
        self.failures = 0
        self.probe_in_flight = False
        self._current_cooldown = 0.0

    def failure(self, now: float) -> None:
        state = self.state(now)
        self.failures += 1
        if state is BreakerState.HALF_OPEN:
            self._open(now, min(self.max_cooldown, max(self.cooldown, self._current_cooldown * 2)))
        elif state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._open(now, self.cooldown)

    def _open(self, now: float, cooldown: float) -> None:
        self._state = BreakerState.OPEN
        self.opened_at = now
        self._current_cooldown = cooldown
        self.probe_in_flight = False
