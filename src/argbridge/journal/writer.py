"""The one group-commit writer under the journal's roles.

Every write (appends, acks, retry bookkeeping, dead letters, state, retention) is a typed
:class:`~argbridge.journal.ops.Op` queued here. Group commit without a background task:
a waiter that finds no commit running leads: it takes everything queued by then (up to
``max_group_commit``), stages it on the event loop (slices of ``STAGE_CHUNK`` ops:
dedupe lookups, keys, the write batch) and writes it as ONE synced LevelDB write batch in
a worker thread, a single plyvel call that releases the GIL (so the event loop keeps
running); the others wait on a shared progress event, set after each commit. One leader
at a time: two (one syncing, one gathering) halved the groups and doubled the syncs in
bench/bench_journal.py.

A group costs one ``fdatasync`` whatever it holds; :attr:`Writer.syncs` counts them.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import plyvel

from argbridge.clock import Clock
from argbridge.errors import JournalClosed, JournalError
from argbridge.journal import store
from argbridge.journal.ops import Append, Mirror, Op, Work
from argbridge.journal.ops import append_run as _append_run
from argbridge.journal.records import body_size
from argbridge.journal.store import Txn

R = TypeVar("R")

#: Ops staged per slice of event-loop time (about 1 ms for 256 appends).
STAGE_CHUNK = 256


class ReadThread:
    """Runs the roles' reads in one worker thread (LevelDB reads may touch the disk)."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._limiter = anyio.CapacityLimiter(1)

    async def close_db(self) -> None:
        """Close the database once no read runs (reads after this raise JournalClosed)."""
        with anyio.CancelScope(shield=True):
            async with self._limiter:
                await anyio.to_thread.run_sync(self._writer.db.close)

    async def run(self, fn: Callable[[plyvel.DB], R]) -> R:
        writer = self._writer

        def guarded(db: plyvel.DB) -> R:
            if writer.closed:  # checked again under the limiter that close_db holds
                raise JournalClosed("the journal is closed")
            return fn(db)

        if writer.closed:
            raise JournalClosed("the journal is closed")
        try:
            return await anyio.to_thread.run_sync(guarded, writer.db, limiter=self._limiter)
        except plyvel.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc


class Writer:
    """Queues typed ops and commits them in groups; owns the journal's :class:`Mirror`."""

    def __init__(
        self,
        db: plyvel.DB,
        mirror: Mirror,
        *,
        clock: Clock,
        max_group_commit: int,
        on_commit: Callable[[], None],
    ) -> None:
        self.db = db
        self.mirror = mirror
        self.clock = clock
        self.max_group_commit = max_group_commit
        self.on_commit = on_commit
        #: Per-sink rewind epochs (an ack read before a rewind is stale).
        self.epochs: dict[str, int] = dict.fromkeys(mirror.cursors, 0)
        self.commits = 0
        self.syncs = 0
        self.appended = 0
        self.duplicates = 0
        self.closed = False
        self._pending: deque[Op[object]] = deque()
        self._committing = False
        self._limiter = anyio.CapacityLimiter(1)
        self._idle = anyio.Event()
        self._idle.set()
        #: Set (and replaced) after every group commit and whenever a leader slot frees
        #: up with ops still queued: every waiter then re-checks its op.
        self._progress = anyio.Event()
        self._appended = anyio.Event()

    # -- submitting --------------------------------------------------------------------

    def enqueue(self, op: Op[R]) -> Op[R]:
        if self.closed:
            raise JournalClosed("the journal is closed")
        self._pending.append(op)  # type: ignore[arg-type]
        return op

    async def submit(self, op: Op[R]) -> R:
        return await self.wait(self.enqueue(op))

    async def wait(self, op: Op[R]) -> R:
        """Wait for ``op`` to commit, leading a group commit when nobody else is."""
        try:
            while not op.finished:
                if not self._committing:
                    await self._commit_next()
                else:
                    await self._progress.wait()
        except BaseException:
            if not op.finished:
                # Our waiter is gone (cancelled): withdraw the op and never strand others.
                with contextlib.suppress(ValueError):
                    self._pending.remove(op)  # type: ignore[arg-type]
                self._promote()
            raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    async def wait_appended(self, after_seq: int) -> None:
        """Return once an event with ``seq > after_seq`` has been committed."""
        while self.mirror.last_seq <= after_seq:
            if self.closed:
                raise JournalClosed("the journal is closed")
            await self._appended.wait()

    async def aclose(self) -> None:
        """Commit whatever is still queued; later submissions raise :class:`JournalClosed`."""
        if self.closed:
            return
        self.closed = True
        with anyio.CancelScope(shield=True):
            while self._committing:
                await self._idle.wait()
            while self._pending:
                await self._commit_next()
        self._appended.set()

    # -- committing --------------------------------------------------------------------

    def _wake_waiters(self) -> None:
        event, self._progress = self._progress, anyio.Event()
        event.set()

    def _promote(self) -> None:
        if not self._committing and self._pending:
            self._wake_waiters()

    async def _commit_next(self) -> None:
        self._committing = True
        self._idle = anyio.Event()
        ops: list[Op[object]] = []
        try:
            with anyio.CancelScope(shield=True):
                # Let appenders that are already runnable queue their ops first: a bigger
                # group costs the same sync.
                await anyio.lowlevel.checkpoint()
                n = min(len(self._pending), self.max_group_commit)
                ops = [self._pending.popleft() for _ in range(n)]
                if not ops:
                    return
                try:
                    work = await self._commit(ops)
                except Exception as exc:
                    error = JournalError(f"journal commit failed: {exc}")
                    error.__cause__ = exc
                    for op in ops:
                        op.error = error
                else:
                    self._apply(work)
        finally:
            for op in ops:
                op.finished = True
            self._committing = False
            self._idle.set()
            if ops:
                self._wake_waiters()

    async def _commit(self, ops: Sequence[Op[Any]]) -> Work:
        """Stage ``ops`` here, on the event loop, ``STAGE_CHUNK`` at a time (yielding in
        between), then write the batch in the worker thread: there it is one call that
        releases the GIL for the whole synced write. Staging in the thread instead (its
        many short plyvel calls each drop and retake the GIL) kept the event loop waiting
        for the GIL for the whole staging of a group: 5 ms at p99 in bench_journal."""
        work = self._begin()
        for k in range(0, len(ops), STAGE_CHUNK):
            self._stage(work, ops[k : k + STAGE_CHUNK])
            work.txn.flush()
            if k + STAGE_CHUNK < len(ops):
                await anyio.lowlevel.checkpoint()
        if self._finish(work):
            await anyio.to_thread.run_sync(work.txn.write, limiter=self._limiter)
            self.syncs += 1
        return work

    def _commit_sync(self, ops: Sequence[Op[Any]]) -> Work:
        """:meth:`_commit` in one synchronous call (tools and benchmarks)."""
        work = self._begin()
        self._stage(work, ops)
        if self._finish(work):
            work.txn.write()
            self.syncs += 1
        return work

    def _begin(self) -> Work:
        before = self.mirror
        return Work(Txn(self.db), before.copy(), self.clock.time(), self.epochs, before=before)

    def _stage(self, work: Work, ops: Sequence[Op[Any]]) -> None:
        """Apply ``ops`` to the group's transaction and mirror copy."""
        txn = work.txn
        i, n = 0, len(ops)
        while i < n:
            op = ops[i]
            if type(op) is Append:
                j = i + 1
                while j < n and type(ops[j]) is Append:
                    j += 1
                _append_run(work, ops[i:j])  # type: ignore[arg-type]
                i = j
                continue
            i += 1
            if not op.isolated:
                op.result = op.apply(work)
                continue
            saved = work.mirror.copy()
            txn.savepoint()
            try:
                op.result = op.apply(work)
            except Exception as exc:
                txn.rollback()
                work.mirror = saved
                op.error = JournalError(f"journal operation failed: {exc}")
            else:
                txn.release()

    def _finish(self, work: Work) -> bool:
        """Backlog bytes and the seq high-water mark; whether there is anything to write."""
        before, m, txn = work.before, work.mirror, work.txn
        assert before is not None
        if m.cursors:
            lo, hi = before.min_cursor(), m.min_cursor()
            delta = work.added_bytes
            if lo != hi:
                freed = self._bytes_between(txn, min(lo, hi), max(lo, hi))
                delta -= freed if hi > lo else -freed
            m.backlog_bytes = before.backlog_bytes + delta
        else:
            m.backlog_bytes = 0
        if m.last_seq != before.last_seq:
            txn.put(store.K_LAST_SEQ, store.pack_u64(m.last_seq))
        txn.flush()
        return bool(txn.overlay)

    @staticmethod
    def _bytes_between(txn: Txn, lo: int, hi: int) -> int:
        """Bytes of the events with ``lo < seq <= hi``."""
        total = 0
        for key, value in txn.scan(store.P_EVENT, start=store.seq_key(lo + 1)):
            if store.key_seq(key) > hi:
                break
            _, attrs, data = store.unpack_event(value)
            total += body_size(attrs, data)
        return total

    def _apply(self, work: Work) -> None:
        before = self.mirror.last_seq
        self.mirror = work.mirror
        self.commits += 1
        self.appended += work.appended
        self.duplicates += work.duplicates
        if self.mirror.last_seq > before:
            event, self._appended = self._appended, anyio.Event()
            event.set()
        self.on_commit()
