"""Delayed retries through Kafka retry topics (the Spring Kafka / Uber pattern). Pure.

A delivery that fails for now never waits in its events-topic partition: the event is
produced to a retry topic of the sink's consumer group, with its due time, attempt count
and last error in headers, and the events partition moves on. One retry topic per
attempt (``<deployment>.delivery.<sink>.retry.<n>`` holds the events waiting for their
attempt ``n + 1``; past the last tier, the last one), so within a topic the records come
in (nearly) due order: a consumer meets a record not due yet, pauses that partition
until then and reads the others. Because the record is in Kafka (acks=all) before the
events offset is committed, a scheduled retry survives the instance that scheduled it.

Owns: :class:`RetryTopics` (naming and tier choice), :func:`retry_headers` (a record's
headers plus the retry headers, older ones replaced) and :func:`parse_retry` (the retry
headers of a record; :class:`~argbridge.cluster.codec.RecordError` when malformed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from argbridge.cluster.codec import RecordError, header

RETRY_DUE = "argbridge-retry-due"
RETRY_ATTEMPT = "argbridge-retry-attempt"
RETRY_ERROR = "argbridge-retry-error"
RETRY_HEADERS = frozenset({RETRY_DUE, RETRY_ATTEMPT, RETRY_ERROR})
#: The slowest possible schedule in tiers (a webhook's retry_schedule has at most this
#: many entries before the last tier is reused).
MAX_TIERS = 16
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ERROR_BYTES = 500


@dataclass(frozen=True, slots=True)
class RetryTopics:
    """The retry topics of one sink's delivery group."""

    #: ``<deployment>.delivery.<sink>.retry`` (the tiers append ``.<n>``).
    base: str
    tiers: int

    @classmethod
    def of(cls, deployment: str, sink: str, attempts: int) -> RetryTopics:
        """For a sink whose schedule has ``attempts`` attempts (the first one is not a
        retry: ``attempts - 1`` tiers, at least one, at most :data:`MAX_TIERS`)."""
        name = _ILLEGAL.sub("_", sink)
        return cls(f"{deployment}.delivery.{name}.retry", max(1, min(MAX_TIERS, attempts - 1)))

    def topic_for(self, attempts_made: int) -> str:
        """The topic of an event that failed ``attempts_made`` times (≥ 1)."""
        return f"{self.base}.{min(max(attempts_made, 1), self.tiers)}"

    def topics(self) -> list[str]:
        return [f"{self.base}.{n}" for n in range(1, self.tiers + 1)]

    def is_retry(self, topic: str) -> bool:
        return topic.startswith(self.base + ".")


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """What a retry record's headers say."""

    attempt: int
    due_at: float
    error: str


def retry_headers(
    headers: Sequence[tuple[str, bytes]], attempts_made: int, due_at: float, error: str
) -> list[tuple[str, bytes]]:
    """``headers`` without earlier retry headers, plus this retry's."""
    kept = [(k, v) for k, v in headers if k not in RETRY_HEADERS]
    text = error.encode()[:MAX_ERROR_BYTES].decode(errors="ignore")
    return [
        *kept,
        (RETRY_DUE, repr(float(due_at)).encode()),  # exact: a due time read back is due
        (RETRY_ATTEMPT, str(attempts_made).encode()),
        (RETRY_ERROR, text.encode()),
    ]


def parse_retry(headers: Sequence[tuple[str, bytes]]) -> RetryInfo:
    """The retry headers of a retry-topic record."""
    due, attempt = header(headers, RETRY_DUE), header(headers, RETRY_ATTEMPT)
    if due is None or attempt is None:
        raise RecordError(f"a retry record needs {RETRY_DUE} and {RETRY_ATTEMPT} headers")
    try:
        due_at = float(due)
        made = int(attempt)
    except ValueError:
        raise RecordError(f"unreadable retry headers: due={due!r} attempt={attempt!r}") from None
    if made < 1 or due_at != due_at:  # NaN
        raise RecordError(f"unreadable retry headers: due={due!r} attempt={attempt!r}")
    error = (header(headers, RETRY_ERROR) or b"").decode(errors="replace")
    return RetryInfo(made, due_at, error)
