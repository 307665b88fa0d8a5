"""The narrow roles components get instead of the whole :class:`~argbridge.journal.Journal`.

- :class:`SourceJournal`: what a source uses: append (with dedupe), the backpressure
  signal, and the state store (resume points such as an SSE ``Last-Event-ID``).
- :class:`SinkJournal`: what a sink worker and a sink use: reads from the cursor, acks,
  retries, dead letters, and the state store (Slack thread ids, a disabled endpoint).
- :class:`ExactlyOnceSinkJournal`: the exactly-once Kafka sink's, the sink role and what
  its reconciliation with Kafka's progress topic needs: the newest sequence, a rewind of
  its own cursor (the progress topic has less), and its own alert events (fenced).

:meth:`Journal.for_source`, :meth:`Journal.for_sink` and
:meth:`Journal.for_exactly_once_sink` hand out :class:`SourceView`, :class:`SinkView`
and :class:`ExactlyOnceSinkView`, which expose exactly these methods and nothing else of
the journal (:func:`argbridge.registry.sink_journal` picks a sink's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from argbridge.events import CloudEvent
from argbridge.journal.backpressure import PauseSignal
from argbridge.journal.ledger import SinkLedger
from argbridge.journal.log import EventLog
from argbridge.journal.records import (
    AppendStatus,
    DeadLetter,
    EncodedEvent,
    JournalRecord,
    RetryItem,
)
from argbridge.journal.state import StateStore


class StateRole(Protocol):
    async def get_state(self, key: str) -> str | None: ...
    async def set_state(self, key: str, value: str) -> None: ...
    async def delete_state(self, key: str) -> None: ...


class SourceJournal(StateRole, Protocol):
    """A source's view: append, backpressure, state."""

    @property
    def pause(self) -> PauseSignal: ...
    async def append(self, event: CloudEvent, *, wait: bool = True) -> AppendStatus: ...
    async def append_many(
        self, events: Sequence[CloudEvent], *, wait: bool = True
    ) -> list[AppendStatus]: ...
    async def append_encoded(
        self,
        items: Sequence[EncodedEvent],
        *,
        wait: bool = True,
        state: tuple[str, str] | None = None,
    ) -> list[AppendStatus]:
        """:meth:`append_many` of events encoded as they were read (a stream reader holds
        their bytes, not their objects, while they wait). ``state``: a ``(key, value)``
        to :meth:`set_state` once all of them are journaled (a stream's resume point;
        the journal writes it in their group commit)."""
        ...


class SinkJournal(StateRole, Protocol):
    """A sink's view: its cursor, reads, acks, retries, dead letters, state."""

    def cursor(self, sink: str) -> int: ...
    def backlog(self, sink: str) -> int:
        """Events journaled that ``sink`` has not acknowledged yet."""
        ...

    async def read(
        self, sink: str, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]: ...
    async def read_after(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]: ...
    async def wait_for_events(self, after_seq: int) -> None: ...
    async def ack(self, sink: str, seq: int, *, behind: bool = False) -> None:
        """Move ``sink``'s cursor to ``seq``; ``behind``: the caller does not wait on it
        to go on, so it may ride the next group of appends."""
        ...

    async def schedule_retry(
        self, sink: str, record: JournalRecord | RetryItem, attempt: int, due_at: float, error: str
    ) -> None: ...
    async def clear_retry(self, sink: str, event_id: str) -> None: ...
    async def due_retries(self, sink: str, now: float, limit: int = 100) -> list[RetryItem]: ...
    async def next_retry_due(self, sink: str) -> float | None: ...
    async def count_retries(self, sink: str | None = None) -> int: ...
    async def dead_letter(
        self, sink: str, record: JournalRecord | RetryItem, reason: str, attempts: int
    ) -> None: ...
    async def dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]: ...
    async def count_dead_letters(self, sink: str | None = None) -> int: ...


@runtime_checkable
class ExactlyOnceSinkJournal(SinkJournal, Protocol):
    """The exactly-once Kafka sink's view: the sink role, and for its reconciliation
    with the progress topic the newest sequence, a rewind, and its alert events."""

    @property
    def last_seq(self) -> int:
        """The newest journaled sequence (the exactly-once sink reconciles against it)."""
        ...

    async def rewind(self, sink: str, seq: int) -> None:
        """Set ``sink``'s cursor back (the exactly-once sink, when Kafka has less)."""
        ...

    async def alert(self, event: CloudEvent) -> AppendStatus:
        """Journal a sink's own alert (an ``argbridge.*`` event, e.g. a fenced sink); a
        sink appends nothing else."""
        ...


class _StateMethods:
    __slots__ = ("delete_state", "get_state", "set_state")

    def __init__(self, state: StateStore) -> None:
        self.get_state = state.get_state
        self.set_state = state.set_state
        self.delete_state = state.delete_state


class SourceView(_StateMethods):
    """:class:`SourceJournal` over the event log and the state store."""

    __slots__ = ("_log", "append", "append_encoded", "append_many")

    def __init__(self, log: EventLog, state: StateStore) -> None:
        super().__init__(state)
        self._log = log
        self.append = log.append
        self.append_many = log.append_many
        self.append_encoded = log.append_encoded

    @property
    def pause(self) -> PauseSignal:
        return self._log.pause


class SinkView(_StateMethods):
    """:class:`SinkJournal` over the sink ledger, the event log and the state store."""

    __slots__ = (
        "_log",
        "ack",
        "backlog",
        "clear_retry",
        "count_dead_letters",
        "count_retries",
        "cursor",
        "dead_letter",
        "dead_letters",
        "due_retries",
        "next_retry_due",
        "read",
        "read_after",
        "schedule_retry",
        "wait_for_events",
    )

    def __init__(self, ledger: SinkLedger, log: EventLog, state: StateStore) -> None:
        super().__init__(state)
        self._log = log
        self.cursor = ledger.cursor
        self.backlog = ledger.backlog
        self.read = ledger.read
        self.ack = ledger.ack
        self.schedule_retry = ledger.schedule_retry
        self.clear_retry = ledger.clear_retry
        self.due_retries = ledger.due_retries
        self.next_retry_due = ledger.next_retry_due
        self.count_retries = ledger.count_retries
        self.dead_letter = ledger.dead_letter
        self.dead_letters = ledger.dead_letters
        self.count_dead_letters = ledger.count_dead_letters
        self.read_after = log.read_after
        self.wait_for_events = log.wait_for_events


class ExactlyOnceSinkView(SinkView):
    """:class:`ExactlyOnceSinkJournal`: :class:`SinkView` with a rewind, alerts and the
    newest sequence."""

    __slots__ = ("alert", "rewind")

    def __init__(self, ledger: SinkLedger, log: EventLog, state: StateStore) -> None:
        super().__init__(ledger, log, state)
        self.rewind = ledger.rewind
        self.alert = log.append

    @property
    def last_seq(self) -> int:
        return self._log.last_seq


class SinkJournalOverlay:
    """A :class:`SinkJournal` that is ``inner``'s in every method: the base of a role
    that changes one or two of them (cluster mode's acking and retry-topic roles)
    without a forwarding copy of the rest each."""

    def __init__(self, inner: SinkJournal) -> None:
        self.inner = inner

    async def get_state(self, key: str) -> str | None:
        return await self.inner.get_state(key)

    async def set_state(self, key: str, value: str) -> None:
        await self.inner.set_state(key, value)

    async def delete_state(self, key: str) -> None:
        await self.inner.delete_state(key)

    def cursor(self, sink: str) -> int:
        return self.inner.cursor(sink)

    def backlog(self, sink: str) -> int:
        return self.inner.backlog(sink)

    async def read(
        self, sink: str, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        return await self.inner.read(sink, limit, max_bytes)

    async def read_after(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        return await self.inner.read_after(after_seq, limit, max_bytes)

    async def wait_for_events(self, after_seq: int) -> None:
        await self.inner.wait_for_events(after_seq)

    async def ack(self, sink: str, seq: int, *, behind: bool = False) -> None:
        await self.inner.ack(sink, seq, behind=behind)

    async def schedule_retry(
        self, sink: str, record: JournalRecord | RetryItem, attempt: int, due_at: float, error: str
    ) -> None:
        await self.inner.schedule_retry(sink, record, attempt, due_at, error)

    async def clear_retry(self, sink: str, event_id: str) -> None:
        await self.inner.clear_retry(sink, event_id)

    async def due_retries(self, sink: str, now: float, limit: int = 100) -> list[RetryItem]:
        return await self.inner.due_retries(sink, now, limit)

    async def next_retry_due(self, sink: str) -> float | None:
        return await self.inner.next_retry_due(sink)

    async def count_retries(self, sink: str | None = None) -> int:
        return await self.inner.count_retries(sink)

    async def dead_letter(
        self, sink: str, record: JournalRecord | RetryItem, reason: str, attempts: int
    ) -> None:
        await self.inner.dead_letter(sink, record, reason, attempts)

    async def dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]:
        return await self.inner.dead_letters(sink, dlids=dlids, since=since, limit=limit)

    async def count_dead_letters(self, sink: str | None = None) -> int:
        return await self.inner.count_dead_letters(sink)
