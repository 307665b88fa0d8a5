"""The durable journal: every accepted event, per-sink cursors, retries and dead letters.

Invariants (what "nothing accepted is ever lost" rests on):

1. An event is *accepted* when :meth:`Journal.append` returns: its transaction has
   committed with SQLite WAL + ``synchronous=FULL`` (fsync on commit).
2. Event ids are unique. Appending an id seen before (still journaled, or deleted by
   retention less than ``dedupe_window`` ago) returns :data:`AppendStatus.DUPLICATE`.
3. ``seq`` is dense and increasing (AUTOINCREMENT; a conflicting insert consumes no seq).
4. A sink's cursor only moves forward, and only through :meth:`Journal.ack`, which a sink
   worker calls after the destination confirmed. A crash between delivery and ack
   re-delivers at most that in-flight batch. (A commit of acks alone is not fsynced:
   after a power loss, the batches acked since the last synced commit come again.)
5. An event is deleted only when every configured sink's cursor has passed it and it is
   older than ``retain_delivered``; its id becomes a tombstone until ``dedupe_window``.
6. Retries and dead letters keep their own copy of the event body, so retention never
   takes an event a sink still owes.

Writes (appends, acks, retry bookkeeping, state) are queued and committed together: the
first waiter finding no commit in progress leads and commits everything queued in one
transaction (group commit) on a dedicated connection in a worker thread, then hands the
lead to the next waiter; reads use a second connection. Backpressure: when the slowest sink's
backlog reaches ``max_backlog_events`` or the undelivered bytes reach
``max_backlog_bytes``, :attr:`Journal.pause` is set; it clears below ``resume_ratio``.
Appends are admitted by :class:`~argbridge.backpressure.PauseSignal` first, so the backlog
never exceeds the caps plus their slack (see :mod:`argbridge.backpressure`).

Schema (version 1)::

    events(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, type, subject,
           size INTEGER, body BLOB, appended_at REAL)
    tombstones(id TEXT PRIMARY KEY, appended_at REAL)
    cursors(sink TEXT PRIMARY KEY, seq INTEGER)
    retries(sink, event_id, seq, body, attempt, due_at, last_error, PRIMARY KEY(sink, event_id))
    dead_letters(dlid INTEGER PRIMARY KEY, sink, event_id, seq, body, reason, attempts, failed_at)
    state(key TEXT PRIMARY KEY, value TEXT, updated_at REAL)
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel

from argbridge.backpressure import IntakePaused, PauseSignal
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.errors import JournalClosed, JournalError
from argbridge.events import CloudEvent
from argbridge.logging import get_logger

SCHEMA_VERSION = 1
#: Disk full: the first retry of the failed group after this long, doubling up to the max.
DISK_FULL_RETRY = 0.5
DISK_FULL_RETRY_MAX = 5.0
_log = get_logger(component="journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    appended_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (id TEXT PRIMARY KEY, appended_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retries (
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    due_at REAL NOT NULL,
    last_error TEXT,
    PRIMARY KEY (sink, event_id)
);
CREATE INDEX IF NOT EXISTS retries_due ON retries (sink, due_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    dlid INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_sink ON dead_letters (sink, dlid);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL);
"""

# Existence is checked before inserting (see _known_ids): a conflicting INSERT OR IGNORE
# would still burn an AUTOINCREMENT value, and seq must stay dense (backlog = last_seq -
# cursor).
_INSERT = (
    "INSERT INTO events (id, type, subject, size, body, appended_at) VALUES (?, ?, ?, ?, ?, ?)"
)


class AppendStatus(enum.Enum):
    """Outcome of an append: newly journaled, or already known (dropped)."""

    APPENDED = "appended"
    DUPLICATE = "duplicate"


class JournalRecord:
    """One journaled event with its position.

    Records read from the journal keep the stored JSON ``body`` and decode ``event``
    only when first asked for it: a sink that can work from the body (the Kafka sink in
    binary mode) skips building a :class:`CloudEvent` per record (3-5 µs each).
    Immutable like the frozen dataclass it replaces; equal when all fields are equal.
    """

    __slots__ = ("_body", "_event", "appended_at", "seq", "size")

    seq: int
    size: int
    appended_at: float
    _event: CloudEvent | None
    _body: bytes | None

    def __init__(
        self,
        seq: int,
        event: CloudEvent | None,
        size: int,
        appended_at: float,
        body: bytes | None = None,
    ) -> None:
        if event is None and body is None:
            raise ValueError("a JournalRecord needs its event or its stored body")
        setattr_ = object.__setattr__
        setattr_(self, "seq", seq)
        setattr_(self, "size", size)
        setattr_(self, "appended_at", appended_at)
        setattr_(self, "_event", event)
        setattr_(self, "_body", body)

    @property
    def event(self) -> CloudEvent:
        event = self._event
        if event is None:
            assert self._body is not None
            event = CloudEvent.from_trusted_json(self._body)
            object.__setattr__(self, "_event", event)
        return event

    @property
    def body(self) -> bytes:
        """The event's JSON (as stored, or encoded from the event)."""
        body = self._body
        if body is None:
            body = self.event.to_json()
            object.__setattr__(self, "_body", body)
        return body

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"JournalRecord is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JournalRecord):
            return NotImplemented
        return (self.seq, self.event, self.size, self.appended_at) == (
            other.seq,
            other.event,
            other.size,
            other.appended_at,
        )

    def __hash__(self) -> int:
        return hash((self.seq, self.size, self.appended_at))

    def __repr__(self) -> str:
        return (
            f"JournalRecord(seq={self.seq!r}, event={self.event!r}, size={self.size!r}, "
            f"appended_at={self.appended_at!r})"
        )


@dataclass(frozen=True, slots=True)
class RetryItem:
    """An event a sink owes a redelivery, due at ``due_at``."""

    sink: str
    seq: int
    event: CloudEvent
    attempt: int
    due_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a sink gave up on."""

    dlid: int
    sink: str
    seq: int
    event: CloudEvent
    reason: str
    attempts: int
    failed_at: float


@dataclass(frozen=True, slots=True)
class JournalStats:
    """A snapshot for metrics, readiness and ``argbridge status``."""

    last_seq: int
    cursors: dict[str, int]
    backlog_events: dict[str, int]
    backlog_bytes: int
    paused: bool
    commits: int
    appended: int
    duplicates: int


class _Op:
    """One write waiting for the next group commit.

    Waiters share :attr:`Journal._progress` rather than owning an ``anyio.Event`` each:
    creating and setting one Event per op was ~2 µs of the ~14 µs of event-loop time
    per append in bench/bench_journal.py.
    """

    __slots__ = ("args", "error", "finished", "kind", "nowait", "result")

    def __init__(self, kind: str, args: Any) -> None:
        self.kind = kind
        self.args = args
        #: The caller cannot wait for disk space (a webhook request): fail it instead.
        self.nowait = False
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


class Journal:
    """SQLite journal in ``state_dir``; use as ``async with Journal(...) as journal``."""

    def __init__(
        self,
        path: Path | str,
        *,
        sinks: Iterable[str] = (),
        max_backlog_events: int = 100_000,
        max_backlog_bytes: int = 256 * 1024 * 1024,
        resume_ratio: float = 0.8,
        retain_delivered: float = 3600.0,
        dedupe_window: float = 7 * 86400.0,
        max_group_commit: int = 2048,
        background_checkpoints: bool = False,
        lazy_ack_sync: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.path = Path(path)
        self.sinks = tuple(dict.fromkeys(sinks))
        self.max_backlog_events = max_backlog_events
        self.max_backlog_bytes = max_backlog_bytes
        self.resume_ratio = resume_ratio
        self.retain_delivered = retain_delivered
        self.dedupe_window = dedupe_window
        self.max_group_commit = max_group_commit
        #: Commit groups of acks only without an fsync (see _commit_sync).
        self.lazy_ack_sync = lazy_ack_sync
        # True: the owner calls checkpoint() periodically, so no commit ever pays for a
        # WAL checkpoint (SQLite's auto-checkpoint runs inside the committing transaction
        # and showed up as 10+ ms commit stalls in bench/bench_journal.py).
        self.background_checkpoints = background_checkpoints
        self._checkpointed_commits = 0
        self._cconn: sqlite3.Connection | None = None
        self._climiter = anyio.CapacityLimiter(1)
        self.clock = clock
        self.pause = PauseSignal(max_backlog_events, max_backlog_bytes, resume_ratio)
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._wlimiter = anyio.CapacityLimiter(1)
        self._rlimiter = anyio.CapacityLimiter(1)
        self._pending: deque[_Op] = deque()
        self._committing = False
        self._idle = anyio.Event()
        self._idle.set()
        #: Set (and replaced) after every group commit and whenever a leader slot frees
        #: up with ops still queued: every waiter then re-checks its op.
        self._progress = anyio.Event()
        self._appended_event = anyio.Event()
        self._closed = False
        #: Disk full: the failed group is back in the queue and retried after this delay
        #: (doubling up to DISK_FULL_RETRY_MAX); intake is held meanwhile (see _disk_full).
        self._disk_full_delay = 0.0
        self._last_seq = 0
        self._cursors: dict[str, int] = {}
        self._epochs: dict[str, int] = {}
        self._read_epochs: dict[str, int] = {}
        self._backlog_bytes = 0
        self._commits = 0
        self._appended = 0
        self._duplicates = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self._open_sync)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Commit whatever is still queued, then close the connections."""
        if self._closed:
            return
        self._closed = True
        self.pause.close()
        with anyio.CancelScope(shield=True):
            while self._committing:
                await self._idle.wait()
            while self._pending:
                await self._commit_next()
        with anyio.CancelScope(shield=True):
            async with self._climiter:  # never close under a running checkpoint
                pass
        for conn in (self._wconn, self._rconn, self._cconn):
            if conn is not None:
                conn.close()
        self._appended_event.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            wconn.execute("PRAGMA journal_mode=WAL")
            wconn.execute("PRAGMA synchronous=FULL")
            wconn.execute("PRAGMA busy_timeout=5000")
            if self.background_checkpoints:
                wconn.execute("PRAGMA wal_autocheckpoint=0")
            wconn.executescript(_SCHEMA)
            version = wconn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise JournalError(
                    f"{self.path}: schema version {version} is newer than this argbridge "
                    f"understands ({SCHEMA_VERSION})"
                )
            wconn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            rconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            rconn.execute("PRAGMA busy_timeout=5000")
            if self.background_checkpoints:
                self._cconn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        self._wconn, self._rconn = wconn, rconn
        row = wconn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        seqrow = wconn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._last_seq = max(row[0], seqrow[0] if seqrow else 0)
        known = dict(wconn.execute("SELECT sink, seq FROM cursors").fetchall())
        wconn.execute("BEGIN IMMEDIATE")
        for sink in self.sinks:
            if sink not in known:
                # A new sink starts at the oldest retained event.
                wconn.execute("INSERT INTO cursors (sink, seq) VALUES (?, 0)", (sink,))
                known[sink] = 0
        for sink in set(known) - set(self.sinks):
            # A removed sink must not hold retention back.
            wconn.execute("DELETE FROM cursors WHERE sink = ?", (sink,))
            del known[sink]
        wconn.execute("COMMIT")
        self._cursors = {s: known[s] for s in self.sinks}
        self._epochs = dict.fromkeys(self.sinks, 0)
        low = self._min_cursor()
        self._backlog_bytes = wconn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM events WHERE seq > ?", (low,)
        ).fetchone()[0]
        self._update_pause()

    # -- writes ------------------------------------------------------------------------

    async def append(self, event: CloudEvent, *, wait: bool = True) -> AppendStatus:
        """Journal one event durably; returns once committed (or known as duplicate).

        Waits while the backlog is at its hard bound (:mod:`argbridge.backpressure`);
        with ``wait=False`` raises :class:`IntakePaused` instead."""
        body = event.to_json()
        n, size = await self.pause.admit((len(body),), wait=wait)
        try:
            op = self._enqueue("append", (body, event))
            op.nowait = not wait
            result: AppendStatus = await self._wait(op)
        finally:
            self.pause.release(n, size)
        return result

    async def append_many(
        self, events: Sequence[CloudEvent], *, wait: bool = True
    ) -> list[AppendStatus]:
        """Journal several events; they share the group commit with concurrent appends
        (admitted under the hard bound in as many steps as it takes)."""
        items = [(e.to_json(), e) for e in events]
        sizes = [len(body) for body, _ in items]
        results: list[AppendStatus] = []
        while len(results) < len(items):
            start = len(results)
            n, size = await self.pause.admit(sizes[start:], wait=wait)
            ops: list[_Op] = []
            try:
                ops = [self._enqueue("append", item) for item in items[start : start + n]]
                results.extend([await self._wait(op) for op in ops])
            except BaseException:
                # Cancelled (or failed): withdraw the ops nobody waits for any more.
                for op in ops:
                    if not op.finished:
                        with contextlib.suppress(ValueError):
                            self._pending.remove(op)
                raise
            finally:
                self.pause.release(n, size)
        return results

    async def ack(self, sink: str, seq: int) -> None:
        """Move ``sink``'s cursor to ``seq`` (forward only) once delivery is confirmed."""
        self._check_sink(sink)
        # The epoch of the last read: a rewind since then makes this ack stale.
        await self._submit("ack", (sink, seq, self._read_epochs.get(sink, self._epochs[sink])))

    async def rewind(self, sink: str, seq: int) -> None:
        """Set ``sink``'s cursor back to ``seq`` (replay); an in-flight batch's ack is ignored."""
        self._check_sink(sink)
        self._epochs[sink] += 1
        await self._submit("rewind", (sink, seq))

    async def schedule_retry(
        self, sink: str, record: JournalRecord | RetryItem, attempt: int, due_at: float, error: str
    ) -> None:
        """Remember that ``sink`` owes ``record`` another attempt at ``due_at``."""
        body = record.event.to_json()
        await self._submit(
            "call",
            lambda c: c.execute(
                "INSERT OR REPLACE INTO retries "
                "(sink, event_id, seq, body, attempt, due_at, last_error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sink, record.event.id, record.seq, body, attempt, due_at, error[:1000]),
            ),
        )

    async def clear_retry(self, sink: str, event_id: str) -> None:
        """Forget a retry (delivered, or superseded)."""
        await self._submit(
            "call",
            lambda c: c.execute(
                "DELETE FROM retries WHERE sink = ? AND event_id = ?", (sink, event_id)
            ),
        )

    async def dead_letter(
        self, sink: str, record: JournalRecord | RetryItem, reason: str, attempts: int
    ) -> None:
        """Give up on ``record`` for ``sink``: move it to the dead-letter table."""
        body = record.event.to_json()
        now = self.clock.time()

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM retries WHERE sink = ? AND event_id = ?", (sink, record.event.id)
            )
            c.execute(
                "INSERT INTO dead_letters (sink, event_id, seq, body, reason, attempts, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sink, record.event.id, record.seq, body, reason[:1000], attempts, now),
            )

        await self._submit("call", op)

    async def requeue_dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
    ) -> int:
        """Move dead letters back into the retry table, due now; returns how many."""
        now = self.clock.time()
        where, params = _dl_filter(sink, dlids, since)

        def op(c: sqlite3.Connection) -> int:
            rows = c.execute(
                f"SELECT dlid, sink, event_id, seq, body FROM dead_letters {where}", params
            ).fetchall()
            for dlid, s, event_id, seq, body in rows:
                c.execute(
                    "INSERT OR REPLACE INTO retries "
                    "(sink, event_id, seq, body, attempt, due_at, last_error) "
                    "VALUES (?, ?, ?, ?, 0, ?, 'requeued from dead letters')",
                    (s, event_id, seq, body, now),
                )
                c.execute("DELETE FROM dead_letters WHERE dlid = ?", (dlid,))
            return len(rows)

        count: int = await self._submit("call", op)
        return count

    async def set_state(self, key: str, value: str) -> None:
        """Durably remember a small value (last SSE id, Slack thread ts, endpoint state)."""
        now = self.clock.time()
        await self._submit(
            "call",
            lambda c: c.execute(
                "INSERT OR REPLACE INTO state (key, value, updated_at) VALUES (?, ?, ?)",
                (key, value, now),
            ),
        )

    async def delete_state(self, key: str) -> None:
        await self._submit("call", lambda c: c.execute("DELETE FROM state WHERE key = ?", (key,)))

    async def checkpoint(self) -> bool:
        """Copy committed WAL pages into the database (PASSIVE: never blocks writers).

        For ``background_checkpoints=True``; a no-op when nothing was committed since the
        last call. Returns whether a checkpoint ran.
        """
        if self._cconn is None or self._closed or self._commits == self._checkpointed_commits:
            return False
        self._checkpointed_commits = self._commits
        conn = self._cconn
        try:
            await anyio.to_thread.run_sync(
                lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone(),
                limiter=self._climiter,
            )
        except sqlite3.Error as exc:
            raise JournalError(f"journal checkpoint failed: {exc}") from exc
        return True

    async def run_retention(self, limit: int = 10_000) -> int:
        """Delete up to ``limit`` delivered, expired events and expired tombstones."""
        now = self.clock.time()
        low = self._min_cursor() if self.sinks else self._last_seq
        cutoff = now - self.retain_delivered
        stale = now - self.dedupe_window

        def op(c: sqlite3.Connection) -> int:
            c.execute(
                "INSERT OR IGNORE INTO tombstones (id, appended_at) SELECT id, appended_at "
                "FROM events WHERE seq <= ? AND appended_at <= ? ORDER BY seq LIMIT ?",
                (low, cutoff, limit),
            )
            cur = c.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
                "WHERE seq <= ? AND appended_at <= ? ORDER BY seq LIMIT ?)",
                (low, cutoff, limit),
            )
            c.execute("DELETE FROM tombstones WHERE appended_at < ?", (stale,))
            return cur.rowcount

        deleted: int = await self._submit("call", op)
        return deleted

    # -- the writer --------------------------------------------------------------------

    def _enqueue(self, kind: str, args: Any) -> _Op:
        if self._closed:
            raise JournalClosed("the journal is closed")
        op = _Op(kind, args)
        self._pending.append(op)
        return op

    async def _submit(self, kind: str, args: Any) -> Any:
        return await self._wait(self._enqueue(kind, args))

    async def _wait(self, op: _Op) -> Any:
        """Wait for ``op`` to commit, leading a group commit when nobody else is.

        Group commit without a background task: a waiter that finds no commit running
        leads: it commits everything queued by then (up to ``max_group_commit``) in one
        transaction. The others wait on ``_progress``, which is set after each commit
        (their op is then finished, or one of them leads next). One leader at a time: two
        (one fsyncing, one gathering) halved the groups and doubled the fsyncs in
        bench/bench_journal.py.
        """
        try:
            while not op.finished:
                if op.nowait and self._disk_full_delay:
                    try:
                        self._pending.remove(op)
                    except ValueError:
                        pass  # in the group being committed: its outcome decides
                    else:
                        self._promote()
                        raise IntakePaused("intake paused (disk_full); retry later")
                if not self._committing:
                    if self._disk_full_delay:
                        await self._wait_for_space()
                        continue
                    await self._commit_next()
                else:
                    await self._progress.wait()
        except BaseException:
            if not op.finished:
                # Our waiter is gone (cancelled): withdraw the op and never strand others.
                with contextlib.suppress(ValueError):
                    self._pending.remove(op)
                self._promote()
            raise
        if op.error is not None:
            raise op.error
        return op.result

    # -- disk full -----------------------------------------------------------------------

    def _disk_full(self, exc: BaseException) -> None:
        """A commit failed for lack of space: hold intake (stream readers stop, webhooks
        answer 503), say why, and retry the same group after a growing delay."""
        first = not self._disk_full_delay
        self._disk_full_delay = min(
            DISK_FULL_RETRY_MAX, max(DISK_FULL_RETRY, 2 * self._disk_full_delay)
        )
        detail = f"no space left for the journal ({self.path.parent}): {exc}"
        self.pause.hold("disk_full", detail)
        if first:
            _log.error(
                "journal.disk_full",
                path=str(self.path),
                free_bytes=_free_bytes(self.path.parent),
                error=str(exc),
                retry_in=self._disk_full_delay,
            )

    def _space_returned(self) -> None:
        self._disk_full_delay = 0.0
        self.pause.release_hold("disk_full")
        _log.warning("journal.disk_space_returned", path=str(self.path))

    async def _wait_for_space(self) -> None:
        """Sleep, then retry the group that found the disk full. One waiter at a time
        leads this (``_committing``); the others wait on its progress."""
        self._committing = True
        self._idle = anyio.Event()
        try:
            await self.clock.sleep(self._disk_full_delay)
        finally:
            self._committing = False
            self._idle.set()
        if not self._closed:
            await self._commit_next()  # fails again: a longer delay; else space is back

    def recheck_space(self, min_free: int = 1024 * 1024) -> bool:
        """With nothing queued to retry, release the ``disk_full`` hold once the state
        dir's filesystem has ``min_free`` bytes free (the runtime calls this every
        second); the next commit finds out for sure. Returns whether the hold is gone."""
        if "disk_full" not in self.pause.holds:
            return True
        if self._committing:
            return False  # a queued group's own retry decides
        free = _free_bytes(self.path.parent)
        if free is None or free < min_free:
            return False
        self._space_returned()
        return True

    def _wake_waiters(self) -> None:
        event, self._progress = self._progress, anyio.Event()
        event.set()

    def _promote(self) -> None:
        if not self._committing and self._pending:
            self._wake_waiters()

    async def _commit_next(self) -> None:
        self._committing = True
        self._idle = anyio.Event()
        ops: list[_Op] = []
        try:
            with anyio.CancelScope(shield=True):
                # Let appenders that are already runnable queue their ops first: a bigger
                # group costs the same fsync.
                await anyio.lowlevel.checkpoint()
                n = min(len(self._pending), self.max_group_commit)
                ops = [self._pending.popleft() for _ in range(n)]
                if not ops:
                    return
                try:
                    summary = await anyio.to_thread.run_sync(
                        self._commit_sync, ops, limiter=self._wlimiter
                    )
                except Exception as exc:
                    if _is_disk_full(exc) and not self._closed:
                        # Rolled back, nothing lost: the group waits for space.
                        self._pending.extendleft(reversed(ops))
                        ops = []
                        self._disk_full(exc)
                        return
                    error = JournalError(f"journal commit failed: {exc}")
                    error.__cause__ = exc
                    for op in ops:
                        op.error = error
                else:
                    self._apply(summary)
                    if self._disk_full_delay:
                        self._space_returned()
        finally:
            for op in ops:
                op.finished = True
            self._committing = False
            self._idle.set()
            if ops:
                self._wake_waiters()

    def _commit_sync(self, ops: list[_Op]) -> tuple[int, int, int, int]:
        """Run ``ops`` in one transaction; returns (last_seq, bytes added, appended, dups)."""
        assert self._wconn is not None
        c = self._wconn
        now = self.clock.time()
        added = appended = dups = 0
        last_seq = self._last_seq
        min_before = self._min_cursor()
        cursors = dict(self._cursors)
        # A group of cursor acks only is committed without its own fsync (WAL,
        # synchronous=NORMAL): a process crash loses nothing, a power loss at most the
        # acks since the last synced commit (their batches are delivered again: the
        # at-least-once a crash before an ack already gives). Every other group, and so
        # every accepted event, still waits for its fsync.
        lazy = self.lazy_ack_sync and all(op.kind == "ack" for op in ops)
        if lazy:
            c.execute("PRAGMA synchronous=NORMAL")
        c.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(ops):
                op = ops[i]
                if op.kind == "append":
                    # A run of consecutive appends: one lookup, one executemany.
                    j = i
                    while j < len(ops) and ops[j].kind == "append":
                        j += 1
                    run = ops[i:j]
                    i = j
                    fresh: list[_Op] = []
                    seen: set[str] = set()
                    known = self._known_ids(c, [o.args[1].id for o in run])
                    for o in run:
                        event_id = o.args[1].id
                        if event_id in known or event_id in seen:
                            dups += 1
                            o.result = AppendStatus.DUPLICATE
                        else:
                            seen.add(event_id)
                            fresh.append(o)
                    if not fresh:
                        continue
                    c.executemany(
                        _INSERT,
                        [
                            (
                                o.args[1].id,
                                o.args[1].type,
                                o.args[1].subject,
                                len(o.args[0]),
                                o.args[0],
                                now,
                            )
                            for o in fresh
                        ],
                    )
                    top = c.execute(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
                    ).fetchone()[0]
                    if top != last_seq + len(fresh):
                        raise JournalError(
                            f"sequence gap: expected {last_seq + len(fresh)}, got {top}"
                        )
                    last_seq = top
                    for o in fresh:
                        added += len(o.args[0])
                        o.result = AppendStatus.APPENDED
                    appended += len(fresh)
                    continue
                i += 1
                if op.kind == "ack":
                    sink, seq, epoch = op.args
                    if epoch == self._epochs.get(sink) and seq > cursors[sink]:
                        seq = min(seq, last_seq)
                        c.execute("UPDATE cursors SET seq = ? WHERE sink = ?", (seq, sink))
                        cursors[sink] = seq
                elif op.kind == "rewind":
                    sink, seq = op.args
                    seq = max(0, min(seq, last_seq))
                    c.execute("UPDATE cursors SET seq = ? WHERE sink = ?", (seq, sink))
                    cursors[sink] = seq
                else:  # "call": isolated in a savepoint so one failure spoils only itself
                    c.execute("SAVEPOINT op")
                    try:
                        op.result = op.args(c)
                    except Exception as exc:
                        c.execute("ROLLBACK TO op")
                        op.error = JournalError(f"journal operation failed: {exc}")
                    c.execute("RELEASE op")
            min_after = min(cursors.values()) if cursors else min_before
            freed = 0
            if min_after != min_before:
                lo, hi = sorted((min_before, min_after))
                freed = c.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM events WHERE seq > ? AND seq <= ?",
                    (lo, hi),
                ).fetchone()[0]
                if min_after < min_before:
                    freed = -freed
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:  # SQLite already rolled back after e.g. SQLITE_FULL
                c.execute("ROLLBACK")
            raise
        finally:
            if lazy:
                c.execute("PRAGMA synchronous=FULL")
        self._cursors = cursors
        return last_seq, added - freed, appended, dups

    def _known_ids(self, c: sqlite3.Connection, ids: list[str]) -> set[str]:
        """Which of ``ids`` are journaled or tombstoned (chunks within SQLite's bind limit)."""
        known: set[str] = set()
        for k in range(0, len(ids), 400):
            chunk = ids[k : k + 400]
            marks = ",".join("?" * len(chunk))
            known.update(
                row[0]
                for row in c.execute(
                    f"SELECT id FROM events WHERE id IN ({marks}) "
                    f"UNION ALL SELECT id FROM tombstones WHERE id IN ({marks})",
                    chunk + chunk,
                )
            )
        return known

    def _apply(self, summary: tuple[int, int, int, int]) -> None:
        last_seq, delta_bytes, appended, dups = summary
        self._commits += 1
        self._appended += appended
        self._duplicates += dups
        self._backlog_bytes += delta_bytes
        if last_seq > self._last_seq:
            self._last_seq = last_seq
            event, self._appended_event = self._appended_event, anyio.Event()
            event.set()
        self._update_pause()

    # -- backpressure ------------------------------------------------------------------

    def _min_cursor(self) -> int:
        return min(self._cursors.values()) if self._cursors else self._last_seq

    def backlog(self, sink: str) -> int:
        """Events ``sink`` has not acknowledged yet."""
        return self._last_seq - self._cursors[sink]

    def _update_pause(self) -> None:
        events = self._last_seq - self._min_cursor() if self._cursors else 0
        self.pause.update(events, self._backlog_bytes if self._cursors else 0)

    # -- reads -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def cursor(self, sink: str) -> int:
        self._check_sink(sink)
        return self._cursors[sink]

    def stats(self) -> JournalStats:
        return JournalStats(
            last_seq=self._last_seq,
            cursors=dict(self._cursors),
            backlog_events={s: self.backlog(s) for s in self.sinks},
            backlog_bytes=self._backlog_bytes if self._cursors else 0,
            paused=self.pause.is_paused,
            commits=self._commits,
            appended=self._appended,
            duplicates=self._duplicates,
        )

    async def wait_for_events(self, after_seq: int) -> None:
        """Return once an event with ``seq > after_seq`` has been committed."""
        while self._last_seq <= after_seq:
            if self._closed:
                raise JournalClosed("the journal is closed")
            await self._appended_event.wait()

    async def read(
        self, sink: str, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        """Up to ``limit`` events after ``sink``'s cursor, oldest first (and no more
        than ``max_bytes`` of them: see :meth:`read_after`)."""
        self._check_sink(sink)
        self._read_epochs[sink] = self._epochs[sink]
        return await self.read_after(self._cursors[sink], limit, max_bytes)

    async def read_after(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        """Up to ``limit`` retained events with ``seq > after_seq``, oldest first; with
        ``max_bytes``, no more than that many bytes of them (but at least one event,
        however large)."""
        records: list[JournalRecord] = await self._read(
            lambda c: _records(
                c.execute(
                    "SELECT seq, body, size, appended_at FROM events WHERE seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ),
                max_bytes,
            )
        )
        return records

    async def first_seq_since(self, since: float) -> int | None:
        """The first retained seq appended at or after ``since`` (for replay)."""
        row = await self._read(
            lambda c: c.execute(
                "SELECT MIN(seq) FROM events WHERE appended_at >= ?", (since,)
            ).fetchone()
        )
        return None if row[0] is None else int(row[0])

    async def due_retries(self, sink: str, now: float, limit: int = 100) -> list[RetryItem]:
        """Retries of ``sink`` due at ``now``, earliest first."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT seq, body, attempt, due_at, last_error FROM retries "
                "WHERE sink = ? AND due_at <= ? ORDER BY due_at LIMIT ?",
                (sink, now, limit),
            ).fetchall()
        )
        return [
            RetryItem(sink, seq, CloudEvent.from_trusted_json(body), attempt, due, err)
            for seq, body, attempt, due, err in rows
        ]

    async def next_retry_due(self, sink: str) -> float | None:
        """When ``sink``'s next retry is due, or ``None``."""
        row = await self._read(
            lambda c: c.execute(
                "SELECT MIN(due_at) FROM retries WHERE sink = ?", (sink,)
            ).fetchone()
        )
        return None if row[0] is None else float(row[0])

    async def count_retries(self, sink: str | None = None) -> int:
        where, params = ("WHERE sink = ?", (sink,)) if sink else ("", ())
        row = await self._read(
            lambda c: c.execute(f"SELECT COUNT(*) FROM retries {where}", params).fetchone()
        )
        return int(row[0])

    async def dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        where, params = _dl_filter(sink, dlids, since)
        rows = await self._read(
            lambda c: c.execute(
                "SELECT dlid, sink, seq, body, reason, attempts, failed_at FROM dead_letters "
                f"{where} ORDER BY dlid LIMIT ?",
                (*params, limit),
            ).fetchall()
        )
        return [
            DeadLetter(
                dlid, s, seq, CloudEvent.from_trusted_json(body), reason, attempts, failed_at
            )
            for dlid, s, seq, body, reason, attempts, failed_at in rows
        ]

    async def count_dead_letters(self, sink: str | None = None) -> int:
        where, params = _dl_filter(sink, None, None)
        row = await self._read(
            lambda c: c.execute(f"SELECT COUNT(*) FROM dead_letters {where}", params).fetchone()
        )
        return int(row[0])

    async def get_state(self, key: str) -> str | None:
        row = await self._read(
            lambda c: c.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed or self._rconn is None:
            raise JournalClosed("the journal is closed")
        conn = self._rconn
        try:
            return await anyio.to_thread.run_sync(fn, conn, limiter=self._rlimiter)
        except sqlite3.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc

    def _check_sink(self, sink: str) -> None:
        if sink not in self._cursors:
            raise JournalError(f"unknown sink {sink!r}; the journal tracks {list(self.sinks)}")


def _is_disk_full(exc: BaseException) -> bool:
    """SQLite's ``SQLITE_FULL`` (or ``ENOSPC`` from below it)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _records(
    rows: Iterable[tuple[int, bytes, int, float]], max_bytes: int | None = None
) -> list[JournalRecord]:
    """``JournalRecord(seq, None, size, appended_at, body)`` for each row, made with the
    slots' own setters: a third of the cost of ``__init__`` (which has to go around the
    immutability guard), on the path every delivered event takes. With ``max_bytes``,
    stops before the row that would pass it (unless it is the first)."""
    new, cls = object.__new__, JournalRecord
    set_seq, set_body, set_size, set_at, set_event = _RECORD_SETTERS
    records: list[JournalRecord] = []
    append = records.append
    budget = max_bytes
    for seq, body, size, appended_at in rows:
        if budget is not None:
            if size > budget and records:
                break  # not fetched again: the next read starts after the last record
            budget -= size
        record = new(cls)
        set_seq(record, seq)
        set_body(record, body)
        set_size(record, size)
        set_at(record, appended_at)
        set_event(record, None)
        append(record)
    return records


_RECORD_SETTERS = tuple(
    vars(JournalRecord)[name].__set__ for name in ("seq", "_body", "size", "appended_at", "_event")
)


def _dl_filter(
    sink: str | None, dlids: Sequence[int] | None, since: float | None
) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if sink is not None:
        clauses.append("sink = ?")
        params.append(sink)
    if dlids:
        clauses.append(f"dlid IN ({','.join('?' * len(dlids))})")
        params.extend(dlids)
    if since is not None:
        clauses.append("failed_at >= ?")
        params.append(since)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
