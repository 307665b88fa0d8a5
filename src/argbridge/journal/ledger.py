"""The sink ledger: what sink workers use: cursors, reads from their cursor, acks,
rewinds, retries and dead letters.

A cursor only moves forward, and only through :meth:`SinkLedger.ack`, called after the
destination confirmed; a rewind bumps the sink's epoch so an ack of a batch read before
it is ignored. Retries and dead letters keep their own copy of the event (attributes and
data), so retention never takes an event a sink still owes.
"""

from __future__ import annotations

from collections.abc import Sequence

from argbridge.errors import JournalError
from argbridge.events import CloudEvent
from argbridge.journal import store
from argbridge.journal.engine import Engine
from argbridge.journal.log import EventLog
from argbridge.journal.ops import (
    Ack,
    AddDeadLetter,
    ClearRetry,
    RequeueDeadLetters,
    Rewind,
    ScheduleRetry,
    dead_letter_matches,
)
from argbridge.journal.records import DeadLetter, JournalRecord, RetryItem, join_body
from argbridge.journal.writer import ReadThread, Writer


def _parts(record: JournalRecord | RetryItem) -> tuple[bytes, bytes]:
    if isinstance(record, JournalRecord):
        return record.parts()
    from argbridge.journal.records import encode_event

    return encode_event(record.event)


def _event(parts: Sequence[bytes]) -> CloudEvent:
    return CloudEvent.from_trusted_json(join_body(parts[0], parts[1]))


class SinkLedger:
    """Per-sink cursors, retries and dead letters over the shared writer."""

    def __init__(self, writer: Writer, reads: ReadThread, log: EventLog) -> None:
        self._writer = writer
        self._reads = reads
        self._log = log
        self._read_epochs: dict[str, int] = {}

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(self._writer.mirror.cursors)

    def _check_sink(self, sink: str) -> None:
        if sink not in self._writer.mirror.cursors:
            raise JournalError(f"unknown sink {sink!r}; the journal tracks {list(self.sinks)}")

    # -- cursors -----------------------------------------------------------------------

    def cursor(self, sink: str) -> int:
        self._check_sink(sink)
        return self._writer.mirror.cursors[sink]

    def backlog(self, sink: str) -> int:
        """Events ``sink`` has not acknowledged yet."""
        m = self._writer.mirror
        return m.last_seq - m.cursors[sink]

    async def read(
        self, sink: str, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        """Up to ``limit`` events after ``sink``'s cursor, oldest first (and no more than
        ``max_bytes`` of them, at least one: see :meth:`EventLog.read_after`)."""
        self._check_sink(sink)
        writer = self._writer
        self._read_epochs[sink] = writer.epochs[sink]
        cursor = writer.mirror.cursors[sink]
        if cursor >= writer.mirror.last_seq and not writer.closed:
            # Caught up: nothing committed after the cursor, so no read in the worker
            # thread (a caught-up sink worker reads once more after every ack; at a few
            # hundred events a second that hop was a third of the journal's per-batch
            # thread hand-offs).
            return []
        return await self._log.read_after(cursor, limit, max_bytes)

    async def ack(self, sink: str, seq: int, *, behind: bool = False) -> None:
        """Move ``sink``'s cursor to ``seq`` (forward only) once delivery is confirmed.
        ``behind``: the caller goes on without this ack (it acks in the background), so
        while appends arrive it may wait for their next group instead of committing
        alone (journal/linger.py)."""
        self._check_sink(sink)
        # The epoch of the last read: a rewind since then makes this ack stale.
        epoch = self._read_epochs.get(sink, self._writer.epochs[sink])
        await self._writer.submit(Ack(sink, seq, epoch, behind=behind))

    async def rewind(self, sink: str, seq: int) -> None:
        """Set ``sink``'s cursor back to ``seq`` (replay); an in-flight batch's ack is ignored."""
        self._check_sink(sink)
        self._writer.epochs[sink] += 1
        await self._writer.submit(Rewind(sink, seq))

    # -- retries -----------------------------------------------------------------------

    async def schedule_retry(
        self, sink: str, record: JournalRecord | RetryItem, attempt: int, due_at: float, error: str
    ) -> None:
        """Remember that ``sink`` owes ``record`` another attempt at ``due_at``."""
        op = ScheduleRetry(
            sink, record.event.id, record.seq, _parts(record), attempt, due_at, error[:1000]
        )
        await self._writer.submit(op)

    async def clear_retry(self, sink: str, event_id: str) -> None:
        """Forget a retry (delivered, or superseded)."""
        await self._writer.submit(ClearRetry(sink, event_id))

    async def due_retries(self, sink: str, now: float, limit: int = 100) -> list[RetryItem]:
        """Retries of ``sink`` due at ``now``, earliest first."""

        def read(db: Engine) -> list[RetryItem]:
            prefix = store.due_prefix(sink)
            out: list[RetryItem] = []
            with db.iterator(prefix=prefix, include_value=False) as it:
                for key in it:
                    if len(out) >= limit or store.due_of(key, len(prefix)) > now:
                        break
                    event_id = key[len(prefix) + 9 :].decode()
                    raw = db.get(store.retry_key(sink, event_id))
                    if raw is None:
                        continue
                    meta, parts = store.unpack_parts(raw)
                    out.append(
                        RetryItem(
                            sink,
                            meta["seq"],
                            _event(parts),
                            meta["attempt"],
                            meta["due_at"],
                            meta["last_error"],
                        )
                    )
            return out

        return await self._reads.run(read)

    async def next_retry_due(self, sink: str) -> float | None:
        """When ``sink``'s next retry is due, or ``None``."""

        def read(db: Engine) -> float | None:
            prefix = store.due_prefix(sink)
            with db.iterator(prefix=prefix, include_value=False) as it:
                for key in it:
                    return store.due_of(key, len(prefix))
            return None

        return await self._reads.run(read)

    async def count_retries(self, sink: str | None = None) -> int:
        counts = self._writer.mirror.retries
        return counts.get(sink, 0) if sink else sum(counts.values())

    # -- dead letters ------------------------------------------------------------------

    async def dead_letter(
        self, sink: str, record: JournalRecord | RetryItem, reason: str, attempts: int
    ) -> None:
        """Give up on ``record`` for ``sink``: move it to the dead letters."""
        op = AddDeadLetter(
            sink, record.event.id, record.seq, _parts(record), reason[:1000], attempts
        )
        await self._writer.submit(op)

    async def dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        wanted = frozenset(dlids) if dlids else None

        def read(db: Engine) -> list[DeadLetter]:
            out: list[DeadLetter] = []
            with db.iterator(prefix=store.P_DEAD) as it:
                for key, value in it:
                    if len(out) >= limit:
                        break
                    dlid = store.key_seq(key)
                    meta, parts = store.unpack_parts(value)
                    if dead_letter_matches(meta, dlid, sink, wanted, since):
                        out.append(
                            DeadLetter(
                                dlid,
                                meta["sink"],
                                meta["seq"],
                                _event(parts),
                                meta["reason"],
                                meta["attempts"],
                                meta["failed_at"],
                            )
                        )
            return out

        return await self._reads.run(read)

    async def count_dead_letters(self, sink: str | None = None) -> int:
        counts = self._writer.mirror.dead_letters
        return counts.get(sink, 0) if sink else sum(counts.values())

    async def requeue_dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
    ) -> int:
        """Move dead letters back into the retries, due now; returns how many."""
        return await self._writer.submit(RequeueDeadLetters(sink, dlids, since))
