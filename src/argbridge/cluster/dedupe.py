"""The delivery dedupe window: which CloudEvent ids a delivery consumer already handled.

Pure: no I/O, no clock. Times are the records' Kafka timestamps (seconds), so the window
is the same whichever instance rebuilds it. Kept per partition: the events topic is keyed
by subject (else id), so every copy of one event (a webhook retried onto another
instance, a stream re-read after a handover) lands on one partition, and a revoked
partition's ids are dropped with it.

:meth:`DedupeWindow.check` answers whether a key is a repeat within ``window`` seconds
of its first sighting, and remembers it otherwise. A partition forgets ids older than
``window`` behind the newest timestamp it saw, and holds at most ``max_ids`` (the
oldest go first; the forced evictions are counted in :attr:`DedupeWindow.evicted`).
:func:`rebuild_start` is where, on assignment, the consumer starts re-reading a newly
assigned partition (``offsets_for_times``) to fill the window again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)

#: Ids one partition's window holds at most (~120 bytes each: ~120 MB at the cap).
DEFAULT_MAX_IDS = 1_000_000


def rebuild_start(now: float, window: float) -> int:
    """The timestamp (ms, what ``offsets_for_times`` takes) a rebuild reads from."""
    return max(0, int((now - window) * 1000))


class _Partition:
    __slots__ = ("ids", "newest")

    def __init__(self) -> None:
        self.ids: OrderedDict[str, float] = OrderedDict()
        self.newest = float("-inf")


class DedupeWindow(Generic[P]):
    """Keys seen per partition within ``window`` seconds (see the module doc)."""

    def __init__(self, window: float, max_ids: int = DEFAULT_MAX_IDS) -> None:
        if window <= 0:
            raise ValueError("the dedupe window must be positive")
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.window = window
        self.max_ids = max_ids
        self.evicted = 0
        self._parts: dict[P, _Partition] = {}

    def check(self, partition: P, key: str, ts: float) -> bool:
        """``True`` when ``key`` was seen on ``partition`` within the window before
        ``ts`` (a repeat: drop it); else remember it and answer ``False``."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        first = part.ids.get(key)
        if first is not None and ts - first <= self.window:
            return True
        self._put(part, key, ts)
        return False

    def add(self, partition: P, key: str, ts: float) -> None:
        """Remember ``key`` (a rebuild re-reading what was delivered before)."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        if key not in part.ids:
            self._put(part, key, ts)

    def _put(self, part: _Partition, key: str, ts: float) -> None:
        ids = part.ids
        ids.pop(key, None)
        ids[key] = ts
        if ts > part.newest:
            part.newest = ts
        horizon = part.newest - self.window
        while ids:
            oldest_key = next(iter(ids))
            if ids[oldest_key] >= horizon and len(ids) <= self.max_ids:
                break
            if ids[oldest_key] >= horizon:
                self.evicted += 1
            del ids[oldest_key]

    def forget(self, partition: P, key: str) -> None:
        """Forget ``key`` (its delivery did not happen after all: it is read again)."""
        part = self._parts.get(partition)
        if part is not None:
            part.ids.pop(key, None)

    def holds(self, partition: P) -> bool:
        """Whether a window for ``partition`` is kept (assigned and not dropped)."""
        return partition in self._parts

    def keep(self, partition: P) -> None:
        """Start an empty window for ``partition`` (assigned, nothing to re-read)."""
        self._parts.setdefault(partition, _Partition())

    def drop(self, partitions: Iterable[P]) -> None:
        """Forget the windows of ``partitions`` (revoked)."""
        for p in partitions:
            self._parts.pop(p, None)

    def size(self, partition: P | None = None) -> int:
        """Ids held (on one partition, or on all)."""
        if partition is not None:
            part = self._parts.get(partition)
            return 0 if part is None else len(part.ids)
        return sum(len(p.ids) for p in self._parts.values())
