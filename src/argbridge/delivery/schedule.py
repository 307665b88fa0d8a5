"""Retry schedules with jitter (outbound webhooks).

``delays[k]`` is the wait before attempt ``k + 1`` (``delays[0]`` is the first attempt,
normally 0 = immediately). After ``attempts_made`` failed attempts, :meth:`next_delay`
gives the wait before the next one or ``None`` once the schedule is exhausted. Jitter
spreads retries of many events by ``±jitter`` of each delay; a server's ``Retry-After``
is a floor.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_SCHEDULE: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(slots=True)
class RetrySchedule:
    delays: Sequence[float] = DEFAULT_SCHEDULE
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("a retry schedule needs at least one attempt")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")

    @property
    def max_attempts(self) -> int:
        return len(self.delays)

    def next_delay(self, attempts_made: int, retry_after: float | None = None) -> float | None:
        """Seconds before the next attempt, or ``None`` when no attempt is left."""
        if attempts_made >= len(self.delays):
            return None
        base = float(self.delays[max(0, attempts_made)])
        delay = base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)) if base else 0.0
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay
