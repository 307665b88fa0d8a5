"""Token buckets (per Slack channel): ``rate`` tokens per second up to ``burst``, plus a
hard pause when the server answers 429 ``Retry-After``.

Pure: the caller passes ``now`` (monotonic seconds) and sleeps on its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: int
    tokens: float = -1.0
    updated: float | None = None
    blocked_until: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def delay(self, now: float) -> float:
        """Seconds until a token is available (0: one is available now)."""
        self._refill(now)
        wait = max(0.0, self.blocked_until - now)
        if self.tokens < 1.0:
            wait = max(wait, (1.0 - self.tokens) / self.rate)
        return wait

    def take(self, now: float) -> float:
        """Take a token if available and return 0, else return the wait (taking nothing)."""
        wait = self.delay(now)
        if wait > 0:
            return wait
        self.tokens -= 1.0
        return 0.0

    def block(self, now: float, seconds: float) -> None:
        """Honour ``Retry-After``: nothing goes out for ``seconds``, then one message, then
        the base rate again (no burst saved up while blocked)."""
        self.blocked_until = max(self.blocked_until, now + seconds)
        self.tokens = 1.0
        self.updated = self.blocked_until


@dataclass(slots=True)
class Buckets:
    """One bucket per key (channel)."""

    rate: float
    burst: int
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def get(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket
