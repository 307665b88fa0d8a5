"""One owned run as its follower sees it: the resume point from its record, positions
recorded only once the events before them are acked by the Kafka events topic.

Owns :class:`RunLease`. It is the :class:`~argbridge.sources.state.StateStore` the
owning source hands the run's follower: :meth:`RunLease.get_state` answers the record's
position (the ``Last-Event-ID``, a demo run's last event id), :meth:`RunLease.set_state`
(called by the follower once the events before a position are committed to the local
journal) notes the journal's last seq with it, and :meth:`RunLease.run` writes the
newest such position into the run's record once
:meth:`~argbridge.cluster.roles.EventsAcked.acked_seq` covers that seq. So a position in
the control topic never runs ahead of the events topic: a new owner resuming from it,
even with this instance's disk gone for good, loses nothing of the stream.
:meth:`RunLease.finish` records how the run ended (done, refused, missing, stopped); a
``done`` record is written only once everything journaled so far, the run's last events
included, is acked, so that the member may delete it later
(:meth:`~argbridge.cluster.table.PartitionTable.expired`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio

from argbridge.clock import Clock
from argbridge.cluster.records import RunRecord
from argbridge.cluster.roles import EventsAcked

#: Statuses a follower returns that are refusals recorded on the run.
_STATUS_OF = {"done": "done", "auth_failed": "refused", "not_found": "not_found"}


def record_status(follower_status: str) -> str:
    """The record status of a follower's end (``done``, ``refused``, ``not_found``, or
    ``stopped:<reason>`` for another stop, e.g. a wrong content type)."""
    return _STATUS_OF.get(follower_status, f"stopped:{follower_status}")


class RecordWriter(Protocol):
    """Writes an owned run's record (``False``: not written, the run is no longer ours)."""

    instance_id: str

    async def write(self, record: RunRecord) -> bool: ...

    def finished(self, key: str) -> None:
        """The run ended by itself (its end is recorded): release it."""


class RunLease:
    """See the module docstring."""

    def __init__(
        self,
        record: RunRecord,
        writer: RecordWriter,
        acked: EventsAcked,
        journal_seq: Callable[[], int],
        clock: Clock,
        *,
        min_interval: float = 0.5,
    ) -> None:
        self.record = record
        self.writer = writer
        self.acked = acked
        self.journal_seq = journal_seq
        self.clock = clock
        self.min_interval = min_interval
        self._pending: tuple[int, str] | None = None
        self._changed = anyio.Event()
        self._lock = anyio.Lock()
        #: Positions written to the record (tests and metrics read it).
        self.recorded = 0

    @property
    def key(self) -> str:
        return self.record.key

    # -- the StateStore role of the follower ------------------------------------------

    async def get_state(self, key: str) -> str | None:
        return self.record.position

    async def set_state(self, key: str, value: str) -> None:
        self._pending = (self.journal_seq(), value)
        self._changed.set()

    # -- recording ----------------------------------------------------------------------

    async def run(self) -> None:
        """Record positions once acked, at most one write per ``min_interval``; until
        cancelled."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            await self._flush()
            await self.clock.sleep(self.min_interval)

    async def _flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        seq, value = pending
        await self.acked.wait_acked(seq)
        async with self._lock:
            await self._write_position(value)

    async def _write_position(self, value: str) -> None:
        if value != self.record.position and self.record.active:
            record = self.record.with_position(
                value, owner=self.writer.instance_id, at=self.clock.time()
            )
            if await self.writer.write(record):
                self.record = record
                self.recorded += 1

    async def finish(self, follower_status: str, detail: str = "") -> None:
        """Record the run's end: its last acked position, then its status (``done`` once
        everything journaled so far is acked: see the module docstring)."""
        await self._flush()
        status = record_status(follower_status)
        if status == "done":
            await self.acked.wait_acked(self.journal_seq())
        async with self._lock:
            record = self.record.with_status(
                status, detail, owner=self.writer.instance_id, at=self.clock.time()
            )
            if await self.writer.write(record):
                self.record = record
        self.writer.finished(self.key)
