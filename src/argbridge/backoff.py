"""Exponential backoff with full jitter, as plain data (a generator of delays).

Used by sources (reconnects), sinks (redelivery) and the supervisor (restarts).
``Backoff`` is sans-I/O: it only computes delays; the caller sleeps on its clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base * factor**n))``.

    ``floor`` is a minimum delay applied after jitter (so a server-imposed
    ``Retry-After``/``retry:`` can be honoured by passing it to :meth:`next_delay`).
    """

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self, at_least: float = 0.0) -> float:
        """Return the next delay (seconds) and advance; never below ``at_least``."""
        try:
            ceiling = min(self.cap, self.base * (self.factor**self.attempt))
        except OverflowError:  # hours into an outage: factor**attempt left float range
            ceiling = self.cap
        self.attempt += 1
        delay = self.rng.uniform(0.0, ceiling) if self.jitter else ceiling
        return max(delay, at_least)

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self.attempt = 0
