"""The journal's typed write operations, and the in-memory mirror they update.

Every write the journal knows is one class here with an ``apply(work)`` that stages its
keys in the group's :class:`~argbridge.journal.store.Txn` and updates the group's copy
of the :class:`Mirror`; its result type is the ``Op``'s parameter. The writer
(:mod:`argbridge.journal.writer`) runs them in queue order inside one group commit. No op
is ``(kind: str, args: Any)``: a new kind of write is a new class.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from argbridge.journal import store
from argbridge.journal.records import AppendStatus, body_size
from argbridge.journal.store import Txn

R = TypeVar("R")


@dataclass(slots=True)
class Mirror:
    """What the journal keeps in memory of its database (rebuilt on open).

    The event loop reads it without I/O; a group commit works on a copy and the copy
    replaces it once the write is durable.
    """

    last_seq: int = 0
    last_appended_at: float = 0.0
    first_seq: int = 0
    cursors: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    next_dlid: int = 1
    backlog_bytes: int = 0

    def copy(self) -> Mirror:
        return Mirror(
            self.last_seq,
            self.last_appended_at,
            self.first_seq,
            dict(self.cursors),
            dict(self.retries),
            dict(self.dead_letters),
            self.next_dlid,
            self.backlog_bytes,
        )

    def min_cursor(self) -> int:
        return min(self.cursors.values()) if self.cursors else self.last_seq


@dataclass(slots=True)
class Work:
    """One group commit in progress: its transaction, mirror copy, time and counters."""

    txn: Txn
    mirror: Mirror
    now: float
    epochs: dict[str, int]
    appended: int = 0
    duplicates: int = 0
    added_bytes: int = 0
    #: The mirror as it was before the group (what the backlog delta is taken from).
    before: Mirror | None = None
    #: Written as ``m:group`` with the batch: after a failed write, whether it landed.
    token: bytes = b""
    #: The JSON size of each event this group appends, in seq order (the size index).
    sizes: list[int] = field(default_factory=list)
    #: The ``(seq, stored value)`` rows this group appends, in seq order (the writer's
    #: tail of recent events, which caught-up sinks read without the read thread).
    rows: list[tuple[int, bytes]] = field(default_factory=list)


class Op(Generic[R]):
    """A write waiting for the next group commit; ``apply`` runs in the writer thread.

    Waiters share the writer's progress events (one per slice of ``WAKE_SLICE`` waiters)
    rather than owning an ``anyio.Event`` each (one Event per op was ~2 µs of the ~14 µs
    of event-loop time per append).
    """

    __slots__ = ("error", "finished", "result")
    #: Whether a failure of this op alone is rolled back (a savepoint around it).
    isolated = True

    def __init__(self) -> None:
        self.finished = False
        self.result: R | None = None
        self.error: BaseException | None = None

    def apply(self, work: Work) -> R:
        raise NotImplementedError


class Append(Op[AppendStatus]):
    """Journal one event unless its id is known (journaled or tombstoned)."""

    __slots__ = ("body", "event_id", "split")
    isolated = False

    def __init__(self, event_id: str, body: bytes, split: int) -> None:
        """An :class:`~argbridge.journal.records.EncodedEvent`'s fields: ``body`` is
        the attributes JSON then the data JSON, ``split`` the attributes' length."""
        super().__init__()
        self.event_id = event_id
        self.body = body
        self.split = split

    def apply(self, work: Work) -> AppendStatus:
        txn, m = work.txn, work.mirror
        ikey = store.id_key(self.event_id)
        if txn.get(ikey) is not None:
            work.duplicates += 1
            return AppendStatus.DUPLICATE
        seq = m.last_seq + 1
        m.last_seq = seq
        if not m.first_seq:
            m.first_seq = seq
        at = m.last_appended_at = max(work.now, m.last_appended_at)
        body, split = self.body, self.split
        value = store.pack_joined(at, body, split)
        txn.put(store.seq_key(seq), value)
        work.rows.append((seq, value))
        txn.put(ikey, store.pack_index(seq, at))
        work.appended += 1
        size = len(body) + 8 if len(body) > split else len(body)  # records.body_size
        work.added_bytes += size
        work.sizes.append(size)
        return AppendStatus.APPENDED


def append_run(work: Work, ops: Sequence[Append]) -> None:
    """:meth:`Append.apply` for consecutive appends, written out in one loop: the writer
    thread's Python time per event is GIL time the event loop waits for."""
    txn, m = work.txn, work.mirror
    overlay, dirty, get = txn.overlay, txn.dirty, txn.db.ids.get  # the index, directly
    seq = m.last_seq
    at = m.last_appended_at = max(work.now, m.last_appended_at)
    pack_joined, pack_index, seq_key = store.pack_joined, store.pack_index, store.seq_key
    appended, dup, absent = AppendStatus.APPENDED, AppendStatus.DUPLICATE, store.ABSENT
    added = dups = 0
    sized, row = work.sizes.append, work.rows.append
    for op in ops:
        ikey = b"i" + op.event_id.encode()
        known = overlay.get(ikey, absent)
        if known is absent:
            known = get(ikey)
        if known is not None:
            dups += 1
            op.result = dup
            continue
        seq += 1
        body, split = op.body, op.split
        ekey, event = seq_key(seq), pack_joined(at, body, split)
        overlay[ekey] = dirty[ekey] = event
        row((seq, event))
        overlay[ikey] = dirty[ikey] = pack_index(seq, at)
        size = len(body) + 8 if len(body) > split else len(body)  # records.body_size
        added += size
        sized(size)
        op.result = appended
    if seq != m.last_seq:
        work.appended += seq - m.last_seq
        if not m.first_seq:
            m.first_seq = m.last_seq + 1
        m.last_seq = seq
    work.duplicates += dups
    work.added_bytes += added


class Ack(Op[None]):
    """Move a sink's cursor forward (ignored when stale: older, or read before a rewind).
    ``behind``: nobody waits for it to go on (a sink worker acks in the background), so
    it may wait for the next group of appends (journal/linger.py)."""

    __slots__ = ("behind", "epoch", "seq", "sink")

    def __init__(self, sink: str, seq: int, epoch: int, *, behind: bool = False) -> None:
        super().__init__()
        self.sink, self.seq, self.epoch, self.behind = sink, seq, epoch, behind

    def apply(self, work: Work) -> None:
        m = work.mirror
        if self.epoch == work.epochs.get(self.sink) and self.seq > m.cursors[self.sink]:
            seq = min(self.seq, m.last_seq)
            work.txn.put(store.cursor_key(self.sink), store.pack_u64(seq))
            m.cursors[self.sink] = seq


class Rewind(Op[None]):
    """Set a sink's cursor back (replay)."""

    __slots__ = ("seq", "sink")

    def __init__(self, sink: str, seq: int) -> None:
        super().__init__()
        self.sink, self.seq = sink, seq

    def apply(self, work: Work) -> None:
        m = work.mirror
        seq = max(0, min(self.seq, m.last_seq))
        work.txn.put(store.cursor_key(self.sink), store.pack_u64(seq))
        m.cursors[self.sink] = seq


class TrackSinks(Op[None]):
    """Track exactly ``sinks`` from now on (a live reload): a new sink's cursor starts at 0
    (the oldest retained event, as at open); a removed sink's cursor is deleted, so it no
    longer holds retention and backpressure back. The backlog bytes follow the new lowest
    cursor (the events between the old and the new one are all committed)."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: Sequence[str]) -> None:
        super().__init__()
        self.sinks = tuple(sinks)

    def apply(self, work: Work) -> None:
        m = work.mirror
        old_low = m.min_cursor() if m.cursors else m.last_seq
        for sink in self.sinks:
            if sink not in m.cursors:
                work.txn.put(store.cursor_key(sink), store.pack_u64(0))
                m.cursors[sink] = 0
        for sink in [s for s in m.cursors if s not in self.sinks]:
            work.txn.delete(store.cursor_key(sink))
            del m.cursors[sink]
        new_low = m.min_cursor() if m.cursors else m.last_seq
        if new_low != old_low:
            lo, hi = sorted((old_low, new_low))
            moved = sum(
                body_size(*store.unpack_event(value)[1:])
                for _, value in work.txn.db.iterator(
                    start=store.seq_key(lo + 1), stop=store.seq_key(hi + 1)
                )
            )
            m.backlog_bytes += moved if new_low < old_low else -moved
            m.backlog_bytes = max(0, m.backlog_bytes)


def _drop_retry(work: Work, sink: str, event_id: str) -> bool:
    txn = work.txn
    rkey = store.retry_key(sink, event_id)
    old = txn.get(rkey)
    if old is None:
        return False
    meta, _ = store.unpack_parts(old)
    txn.delete(rkey)
    txn.delete(store.due_key(sink, meta["due_at"], event_id))
    work.mirror.retries[sink] = work.mirror.retries.get(sink, 0) - 1
    return True


def _put_retry(
    work: Work,
    sink: str,
    event_id: str,
    seq: int,
    parts: tuple[bytes, bytes],
    attempt: int,
    due_at: float,
    error: str | None,
) -> None:
    _drop_retry(work, sink, event_id)
    meta = {"seq": seq, "attempt": attempt, "due_at": due_at, "last_error": error}
    work.txn.put(store.retry_key(sink, event_id), store.pack_parts(meta, *parts))
    work.txn.put(store.due_key(sink, due_at, event_id), b"")
    work.mirror.retries[sink] = work.mirror.retries.get(sink, 0) + 1


class ScheduleRetry(Op[None]):
    """Remember that a sink owes an event another attempt (replaces an earlier one)."""

    __slots__ = ("attempt", "due_at", "event_id", "last_error", "parts", "seq", "sink")

    def __init__(
        self,
        sink: str,
        event_id: str,
        seq: int,
        parts: tuple[bytes, bytes],
        attempt: int,
        due_at: float,
        error: str,
    ) -> None:
        super().__init__()
        self.sink, self.event_id, self.seq, self.parts = sink, event_id, seq, parts
        self.attempt, self.due_at, self.last_error = attempt, due_at, error

    def apply(self, work: Work) -> None:
        _put_retry(
            work,
            self.sink,
            self.event_id,
            self.seq,
            self.parts,
            self.attempt,
            self.due_at,
            self.last_error,
        )


class ClearRetry(Op[None]):
    """Forget a retry (delivered, or superseded)."""

    __slots__ = ("event_id", "sink")

    def __init__(self, sink: str, event_id: str) -> None:
        super().__init__()
        self.sink, self.event_id = sink, event_id

    def apply(self, work: Work) -> None:
        _drop_retry(work, self.sink, self.event_id)


class AddDeadLetter(Op[int]):
    """Give up on an event for a sink: drop its retry, keep a dead letter; returns its dlid."""

    __slots__ = ("attempts", "event_id", "parts", "reason", "seq", "sink")

    def __init__(
        self,
        sink: str,
        event_id: str,
        seq: int,
        parts: tuple[bytes, bytes],
        reason: str,
        attempts: int,
    ) -> None:
        super().__init__()
        self.sink, self.event_id, self.seq, self.parts = sink, event_id, seq, parts
        self.reason, self.attempts = reason, attempts

    def apply(self, work: Work) -> int:
        m = work.mirror
        _drop_retry(work, self.sink, self.event_id)
        dlid = m.next_dlid
        m.next_dlid += 1
        meta = {
            "sink": self.sink,
            "event_id": self.event_id,
            "seq": self.seq,
            "reason": self.reason,
            "attempts": self.attempts,
            "failed_at": work.now,
        }
        work.txn.put(store.dead_key(dlid), store.pack_parts(meta, *self.parts))
        m.dead_letters[self.sink] = m.dead_letters.get(self.sink, 0) + 1
        return dlid


def dead_letter_matches(
    meta: dict[str, object],
    dlid: int,
    sink: str | None,
    dlids: frozenset[int] | None,
    since: float | None,
) -> bool:
    if sink is not None and meta["sink"] != sink:
        return False
    if dlids is not None and dlid not in dlids:
        return False
    return not (since is not None and float(meta["failed_at"]) < since)  # type: ignore[arg-type]


class RequeueDeadLetters(Op[int]):
    """Move matching dead letters back to retries, due now; returns how many."""

    __slots__ = ("dlids", "since", "sink")

    def __init__(self, sink: str | None, dlids: Sequence[int] | None, since: float | None):
        super().__init__()
        self.sink, self.since = sink, since
        self.dlids = frozenset(dlids) if dlids else None

    def apply(self, work: Work) -> int:
        txn, m = work.txn, work.mirror
        moved = 0
        for key, value in list(txn.scan(store.P_DEAD)):
            dlid = store.key_seq(key)
            meta, parts = store.unpack_parts(value)
            if not dead_letter_matches(meta, dlid, self.sink, self.dlids, self.since):
                continue
            sink = str(meta["sink"])
            _put_retry(
                work,
                sink,
                str(meta["event_id"]),
                int(meta["seq"]),
                (parts[0], parts[1]),
                0,
                work.now,
                "requeued from dead letters",
            )
            txn.delete(key)
            m.dead_letters[sink] = m.dead_letters.get(sink, 0) - 1
            moved += 1
        return moved


class SetState(Op[None]):
    __slots__ = ("key", "value")

    def __init__(self, key: str, value: str) -> None:
        super().__init__()
        self.key, self.value = key, value

    def apply(self, work: Work) -> None:
        raw = store.pack_state(work.now, self.value)
        work.txn.put(store.state_key(self.key), raw)


class SetStateAfter(Op[bool]):
    """:class:`SetState` queued right behind the appends whose progress it records (a
    stream's resume point): it commits in the same group as the last of them, or in a
    later one, and is skipped (``False``) unless every one of them was journaled or
    known as a duplicate. So the point never runs ahead of the journal, and costs no
    group commit and no wait of its own."""

    __slots__ = ("after", "key", "value")

    def __init__(self, key: str, value: str, after: Sequence[Op[Any]]) -> None:
        super().__init__()
        self.key, self.value, self.after = key, value, tuple(after)

    def apply(self, work: Work) -> bool:
        # An append staged in this group has its result already; one of an earlier group
        # that failed has its error; one withdrawn (its waiter gone) has neither.
        if any(op.error is not None or op.result is None for op in self.after):
            return False
        work.txn.put(store.state_key(self.key), store.pack_state(work.now, self.value))
        return True


class DeleteState(Op[None]):
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def apply(self, work: Work) -> None:
        work.txn.delete(store.state_key(self.key))


class Retention(Op[int]):
    """Delete delivered events older than ``cutoff`` (up to ``limit``, oldest first) and
    keep their ids as tombstones; expire tombstones older than ``stale``. Returns how
    many events were deleted. ``appended_at`` never decreases with seq (the writer stamps
    ``max(now, last)``), so both walks stop at the first entry too young."""

    __slots__ = ("cutoff", "limit", "low", "stale")

    def __init__(self, low: int, cutoff: float, stale: float, limit: int) -> None:
        super().__init__()
        self.low, self.cutoff, self.stale, self.limit = low, cutoff, stale, limit

    def apply(self, work: Work) -> int:
        txn, m = work.txn, work.mirror
        deleted = 0
        # Lazily, stopping at the first entry too young: the scan merges a snapshot of
        # the group's writes taken at its start, so deleting as it goes is safe (a
        # materialised list read up to ``limit`` events, 10,000, on the event loop every
        # 30 s when nothing had expired, and every tombstone of the dedupe window).
        for key, value in itertools.islice(txn.scan(store.P_EVENT), max(0, self.limit)):
            seq = store.key_seq(key)
            appended_at, attrs, _ = store.unpack_event(value)
            if seq > self.low or appended_at > self.cutoff:
                break
            event_id = store.event_id_of(attrs)
            txn.delete(key)
            txn.put(store.P_TOMB + store.pack_u64(seq), store.pack_tomb(appended_at, event_id))
            deleted += 1
            m.first_seq = seq + 1 if seq < m.last_seq else 0
        for key, value in txn.scan(store.P_TOMB):
            appended_at, event_id = store.unpack_tomb(value)
            if appended_at >= self.stale:
                break
            txn.delete(key)
            ikey = store.id_key(event_id)
            current = txn.get(ikey)
            # The id may have been journaled again since (after an earlier expiry).
            if current is not None and store.unpack_index(current)[0] == store.key_seq(key):
                txn.delete(ikey)
        return deleted
