"""The durable journal (format 3): every accepted event, per-sink cursors, retries, dead
letters and a small state store, in a LevelDB database under ``state_dir/journal`` (the
log), and the events' ids in a second one derived from it (the index, ``journal/ids``).

Invariants (what "nothing accepted is ever lost" rests on):

1. An event is *accepted* when :meth:`EventLog.append` returns: its group commit was
   written as one LevelDB write batch of the log with ``sync=True`` (one ``fdatasync``).
2. Event ids are unique. Appending an id seen before (still journaled, or deleted by
   retention less than ``dedupe_window`` ago: the id key stays as a tombstone) returns
   :data:`AppendStatus.DUPLICATE`. The index is written after the log, unsynced, and
   caught up from the log at every open; the ids of deleted events are made durable
   before the events are deleted (:mod:`~argbridge.journal.engine`).
3. ``seq`` is dense and increasing (a duplicate consumes no seq).
4. A sink's cursor only moves forward, and only through :meth:`SinkLedger.ack`, which a
   sink worker calls after the destination confirmed. A crash between delivery and ack
   re-delivers at most that in-flight batch.
5. An event is deleted only when every configured sink's cursor has passed it and it is
   older than ``retain_delivered``; its id becomes a tombstone until ``dedupe_window``.
6. Retries and dead letters keep their own copy of the event, so retention never takes
   an event a sink still owes.
7. A group commit is atomic: whatever it holds (appends, acks, retries, dead letters,
   state) is one write batch, so after a crash all of it or none of it is there, and it
   cost ONE ``fdatasync`` (none for a group of cursor acks only, unless
   ``journal.fsync_acks``: a power loss may then re-deliver the batches acked since the
   last synced group; a process crash loses nothing).
8. Intake is admitted against the backlog's hard bound
   (:mod:`~argbridge.journal.backpressure`); a write that fails (disk full) is never
   followed by another on the same database handle (see :mod:`~argbridge.journal.writer`).

Layout: :mod:`~argbridge.journal.engine` (the two databases),
:mod:`~argbridge.journal.store` (keys, codecs, transaction),
:mod:`~argbridge.journal.ops` (typed writes), :mod:`~argbridge.journal.writer` (group
commit), :mod:`~argbridge.journal.sizes` (the backlog's event sizes in memory), the roles
:mod:`~argbridge.journal.log` (sources and readers), :mod:`~argbridge.journal.ledger`
(sink workers), :mod:`~argbridge.journal.state`, their protocols in
:mod:`~argbridge.journal.roles`, :mod:`~argbridge.journal.core` (:class:`Journal`: open,
close, hand out the roles) and :mod:`~argbridge.journal.migrate` (a v1 SQLite journal →
LevelDB).
"""

from argbridge.journal.backpressure import IntakePaused, PauseSignal
from argbridge.journal.core import Journal
from argbridge.journal.ledger import SinkLedger
from argbridge.journal.log import EventLog
from argbridge.journal.records import (
    AppendStatus,
    DeadLetter,
    EncodedEvent,
    JournalRecord,
    JournalStats,
    RetryItem,
)
from argbridge.journal.state import StateStore

__all__ = [
    "AppendStatus",
    "DeadLetter",
    "EncodedEvent",
    "EventLog",
    "IntakePaused",
    "Journal",
    "JournalRecord",
    "JournalStats",
    "PauseSignal",
    "RetryItem",
    "SinkLedger",
    "StateStore",
]
