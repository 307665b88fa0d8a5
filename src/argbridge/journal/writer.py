"""The one group-commit writer under the journal's roles.

Every write (appends, acks, retry bookkeeping, dead letters, state, retention) is a typed
:class:`~argbridge.journal.ops.Op` queued here. Group commit without a background task:
a waiter that finds no commit running leads: it takes everything queued by then (up to
``max_group_commit``), stages it on the event loop (slices of ``STAGE_CHUNK`` ops:
dedupe lookups, keys, the write batch) and writes it as ONE synced LevelDB write batch in
the writer's own thread (:mod:`~argbridge.journal.thread`), a single plyvel call that
releases the GIL (so the event loop keeps running); the others wait for progress, woken
after each commit ``WAKE_SLICE`` per event-loop iteration (so a timer that expires
meanwhile runs after a slice of them, not after all), and the next leader gathers its
group once all are woken. One leader at a time: staging the next group while the last
one is written (measured 2026-12-02, docs/journal.md) halves the groups of a closed
loop of appenders and doubles the syncs, whose cost is mostly fixed: 6-28 % slower in
bench_journal at 64 and 128 appenders, no faster at 256. Under live traffic a small
group with appends waits ``group_linger`` for more first (:meth:`Writer._lingers`).

A group costs one ``fdatasync`` whatever it holds; :attr:`Writer.syncs` counts them. A
group of cursor acks only is written without a sync unless ``fsync_acks`` (the default
of ``journal.fsync_acks`` is false): a process crash loses nothing (the write is in the
OS), a power loss at most the acks since the last synced group (their batches come
again: the at-least-once a crash before an ack gives anyway). The append path keeps one
sync per group.

Disk full (and any failed write). Measured on a full tmpfs: a failed synced write batch
raises ``plyvel.IOError`` ("No space left on device") and leaves nothing in the memtable,
but may leave a partial record at the end of LevelDB's log; LevelDB keeps using that log,
so a later write that "succeeds" sits behind broken framing and is dropped on the next
recovery ("checksum mismatch"). So after a failed write the writer never writes to that
database handle again: the failed group goes back to the front of the queue, intake is
held (``PauseSignal.hold("disk_full")``: stream readers stop, webhooks 503), an alert is
logged, and the group is retried after 0.5 s doubling to 5 s. Each retry first reopens
the database (recovery drops the partial record and starts a new log; it needs some
space, so a reopen may itself fail: then the journal refuses reads too until a retry
reopens it) and checks the group token (``m:group``, written in every batch) to learn
whether the failed write landed after all (a failed sync on a real disk); then it
commits the group, or takes it as committed. A waiter that may not wait
(``nowait``: a webhook) gets :class:`IntakePaused` instead. Once a group commits, or
:meth:`Writer.recheck_space` sees space again, the hold is released.

A reopen on request (:meth:`Writer.reopen`, to let LevelDB give back its memtable,
cache and mapped tables) goes through the same hand-off: the next group commit does it
first, before gathering its group, so a busy writer cannot starve it; one that fails
leaves the writer recovering, as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import plyvel

from argbridge.clock import Clock
from argbridge.errors import JournalClosed, JournalError
from argbridge.journal import engine, store
from argbridge.journal.backpressure import IntakePaused, PauseSignal
from argbridge.journal.engine import Engine
from argbridge.journal.linger import GroupLinger
from argbridge.journal.ops import Ack, Append, Mirror, Op, Work
from argbridge.journal.ops import append_run as _append_run
from argbridge.journal.records import body_size
from argbridge.journal.sizes import SizeIndex
from argbridge.journal.store import Txn
from argbridge.journal.tail import RecentEvents
from argbridge.journal.thread import JournalThread
from argbridge.logging import get_logger

R = TypeVar("R")

#: Ops staged per slice of event-loop time (5-6 µs each for 1 KiB appends: ~0.1 ms).
STAGE_CHUNK = 16
#: Waiters resumed per event-loop iteration after a group commit (:meth:`Writer._wake_waiters`).
WAKE_SLICE = 8
#: Disk full: the failed group is retried after this delay, doubling up to the max.
DISK_FULL_RETRY = 0.5
DISK_FULL_RETRY_MAX = 5.0
#: Free bytes at which a held journal with nothing queued lets intake resume.
MIN_FREE_BYTES = 1024 * 1024

_log = get_logger(component="journal")


def is_disk_full(exc: BaseException | None) -> bool:
    """``ENOSPC``/``EDQUOT`` from the OS, or LevelDB's IOError saying so (also as the
    cause of a :class:`JournalError`)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, plyvel.Error):
            text = str(exc)
            return "No space left" in text or "quota exceeded" in text
        exc = exc.__cause__
    return False


def free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():  # a cancelled waiter's is
            fut.set_result(None)


class _WriteFailed(Exception):
    """The group's write batch failed (not its staging): the database handle is suspect."""


class ReadThread:
    """Runs the roles' reads in one thread of its own (LevelDB reads may touch the disk).

    The database's close and the disk-full reopen run in the same thread, so in order
    with the reads: a read queued before them ran on the open database, one queued after
    them finds the journal closed (or the database down) and refuses."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._thread = JournalThread("argbridge-journal-read")
        writer.reopen_db = self._reopen
        #: Reads run in the worker thread so far.
        self.reads = 0

    async def _reopen(self, path: Path) -> Engine:
        """Close the writer's database and open it again (the disk-full recovery), after
        the reads queued before. On failure the database stays closed: reads refuse."""
        writer = self._writer

        def reopen() -> Engine:
            writer.db_down = True
            writer.db.close()
            db = writer.db = engine.open_db(path, compression=writer.compression)
            writer.db_down = False
            return db

        return await self._thread.run(reopen)

    async def close_db(self) -> None:
        """Close the database after the reads queued before (reads after this raise
        JournalClosed); the thread ends."""
        await self._thread.run(self._writer.db.close)
        self._thread.close()

    async def run(self, fn: Callable[[Engine], R]) -> R:
        writer = self._writer

        def guarded() -> R:
            if writer.closed:  # checked again in the thread that close_db runs in
                raise JournalClosed("the journal is closed")
            if writer.db_down:
                raise JournalError("the journal is unavailable (its database is being reopened)")
            return fn(writer.db)

        if writer.closed:
            raise JournalClosed("the journal is closed")
        self.reads += 1
        try:
            return await self._thread.run(guarded)
        except plyvel.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc


class Writer:
    """Queues typed ops and commits them in groups; owns the journal's :class:`Mirror`."""

    def __init__(
        self,
        db: Engine,
        mirror: Mirror,
        *,
        clock: Clock,
        max_group_commit: int,
        on_commit: Callable[[], None],
        pause: PauseSignal | None = None,
        path: Path | None = None,
        fsync_acks: bool = True,
        sizes: SizeIndex | None = None,
        group_linger: float = 0.0,
        compression: store.Compression = "snappy",
    ) -> None:
        self.db = db
        #: The database's block compression, kept when it is reopened.
        self.compression: store.Compression = compression
        #: Gather window of a small group with appends under live traffic (see
        #: journal/linger.py): 0 commits every group at once.
        self.linger = GroupLinger(group_linger, clock)
        #: The committed backlog's event sizes (the bytes an ack frees, without a read).
        self.sizes = sizes if sizes is not None else SizeIndex(mirror.last_seq)
        #: The last committed events, for caught-up readers (see journal/tail.py).
        self.tail = RecentEvents()
        #: The database directory (reopened after a failed write) and the pause signal
        #: whose ``disk_full`` hold the writer sets and releases.
        self.path = path
        self.pause = pause or PauseSignal()
        #: Sync groups of acks only too (see the module docstring).
        self.fsync_acks = fsync_acks
        #: Set by :class:`ReadThread`: close and reopen the database under its reads.
        self.reopen_db: Callable[[Path], Awaitable[Engine]] | None = None
        #: The database is closed for a reopen that has not succeeded yet.
        self.db_down = False
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
        #: The thread the group commits' write batches (and their syncs) run in.
        self.thread = JournalThread("argbridge-journal-write")
        self._idle = anyio.Event()
        self._idle.set()
        #: The waiters of the current progress generation, a future each, in slices of
        #: ``WAKE_SLICE``; all resolved (and replaced) after every group commit and
        #: whenever a leader slot frees up with ops still queued: every waiter then
        #: re-checks its op. A future of its own per waiter (not an ``anyio.Event`` per
        #: slice: its ``wait`` went through anyio's and asyncio's layers, a future and a
        #: deque per waiter anyway), so a cancelled waiter cancels only its own.
        self._slices: list[list[asyncio.Future[None]]] = []
        #: Generations still being woken slice by slice; ``_woken`` is set when none is.
        self._waking = 0
        self._woken = anyio.Event()
        self._woken.set()
        self._appended = anyio.Event()
        # Disk full: the retry delay (0: not held), whether the handle must be reopened
        # before the next write, the failed group (token, work, staged outcomes), and the
        # scope of the retry's sleep (cancelled to retry at once).
        self.retry_delay = 0.0
        self._suspect = False
        self._failed: tuple[bytes, Work, list[tuple[Op[Any], Any, BaseException | None]]] | None
        self._failed = None
        self._retry_scope: anyio.CancelScope | None = None
        self._token = os.urandom(8)
        self._groups = 0
        # A reopen asked for (:meth:`reopen`): done by the next group commit first.
        self._reopened: anyio.Event | None = None
        self._reopen_ok = False

    # -- submitting --------------------------------------------------------------------

    def enqueue(self, op: Op[R]) -> Op[R]:
        if self.closed:
            raise JournalClosed("the journal is closed")
        self._pending.append(op)  # type: ignore[arg-type]
        if self.linger.waiting and type(op) is Append:
            self.linger.arrived()
        return op

    async def submit(self, op: Op[R]) -> R:
        return await self.wait(self.enqueue(op))

    async def wait(self, op: Op[R], *, nowait: bool = False) -> R:
        """Wait for ``op`` to commit, leading a group commit when nobody else is. With
        ``nowait``, raise :class:`IntakePaused` instead of waiting for disk space."""
        try:
            while not op.finished:
                if self.retry_delay and nowait and self.withdraw((op,)):
                    raise IntakePaused("intake paused (disk_full); retry later")
                if not self._committing:
                    if self.retry_delay:
                        await self._wait_for_space()
                        continue
                    await self._commit_next()
                else:
                    await self._slot()
        except BaseException:
            if not op.finished:
                # Our waiter is gone (cancelled): withdraw the op and never strand others.
                self.withdraw((op,))
            raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def withdraw(self, ops: Iterable[Op[Any]]) -> bool:
        """Take the unfinished ``ops`` still queued out of the queue (their waiter is
        gone); whether any was. Ops in the group being committed stay: its outcome
        decides."""
        taken = False
        for op in ops:
            if not op.finished:
                with contextlib.suppress(ValueError):
                    self._pending.remove(op)
                    taken = True
        self._promote()
        return taken

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
        if self._retry_scope is not None:
            self._retry_scope.cancel()  # a disk-full retry: now, and the last one
        with anyio.CancelScope(shield=True):
            while self._committing:
                await self._idle.wait()
            while self._pending:
                await self._commit_next()
        self.thread.close()
        self._appended.set()

    # -- committing --------------------------------------------------------------------

    def _slot(self) -> asyncio.Future[None]:
        """A waiter's future in the current progress generation's open slice."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slices = self._slices
        if slices and len(slices[-1]) < WAKE_SLICE:
            slices[-1].append(fut)
        else:
            slices.append([fut])
        return fut

    def _wake_waiters(self) -> None:
        """Wake every waiter of the current generation, ``WAKE_SLICE`` per event-loop
        iteration: the first slice now, each next one from a ``call_soon`` callback.
        Resumed all at once, 64 appenders (~25 µs of loop time each) ran as one 1.5-2 ms
        burst ahead of any timer that expired meanwhile (bench_journal's lag probe); a
        timer due in between now waits for one slice. The next leader gathers its group
        only once the waking is done (:meth:`_commit_next`), so groups stay as large."""
        slices, self._slices = self._slices, []
        if not slices:
            return
        _resolve_all(slices[0])
        if len(slices) > 1:
            if not self._waking:
                self._woken = anyio.Event()
            self._waking += 1
            asyncio.get_running_loop().call_soon(self._wake_next, slices, 1)

    def _wake_next(self, slices: list[list[asyncio.Future[None]]], k: int) -> None:
        _resolve_all(slices[k])
        if k + 1 < len(slices):
            asyncio.get_running_loop().call_soon(self._wake_next, slices, k + 1)
            return
        self._waking -= 1
        if not self._waking:
            self._woken.set()

    def _promote(self) -> None:
        if not self._committing and self._pending:
            self._wake_waiters()

    async def _commit_next(self) -> None:
        self._committing = True
        self._idle = anyio.Event()
        ops: list[Op[object]] = []
        try:
            with anyio.CancelScope(shield=True):
                # Let appenders that are already runnable queue their ops first, and those
                # still being woken slice by slice: a bigger group costs the same sync.
                await anyio.lowlevel.checkpoint()
                while self._waking:
                    await self._woken.wait()
                if self._reopened is not None:
                    await self._reopen_now()
                if self._suspect and not await self._recover():
                    return
                if self._lingers():
                    await self.linger.wait()
                n = min(len(self._pending), self.max_group_commit)
                ops = [self._pending.popleft() for _ in range(n)]
                if not ops:
                    return
                if self.linger.enabled and any(type(op) is Append for op in ops):
                    self.linger.committed(len(ops))
                try:
                    work = await self._commit(ops)
                except _WriteFailed as failed:
                    exc = failed.__cause__ or failed
                    # Never written to this handle again (see the module docstring).
                    self._suspect = True
                    if is_disk_full(exc) and not self.closed:
                        self._hold_for_space(ops, failed.args[0], exc)
                        ops = []
                        return
                    self._fail(ops, exc)
                except Exception as exc:
                    self._fail(ops, exc)
                else:
                    self._apply(work)
                    if self.retry_delay:
                        self._space_returned()
        finally:
            for op in ops:
                op.finished = True
            self._committing = False
            self._idle.set()
            if ops:
                self._wake_waiters()

    def _lingers(self) -> bool:
        """Whether the leader waits ``group_linger`` for more appends before committing
        (journal/linger.py): never while closed or held for disk space."""
        return not self.closed and not self.retry_delay and self.linger.wanted(self._pending)

    @staticmethod
    def _fail(ops: Sequence[Op[Any]], exc: BaseException) -> None:
        error = JournalError(f"journal commit failed: {exc}")
        error.__cause__ = exc
        for op in ops:
            op.error = error

    # -- disk full ---------------------------------------------------------------------

    def _hold_for_space(self, ops: list[Op[Any]], work: Work, exc: BaseException) -> None:
        """The group found no space: back to the front of the queue (its staged outcomes
        kept, in case the write landed after all), intake held, the alert logged."""
        self._failed = (work.token, work, [(op, op.result, op.error) for op in ops])
        for op in ops:
            op.result = op.error = None
        self._pending.extendleft(reversed(ops))
        self._disk_full(exc)

    def _disk_full(self, exc: BaseException) -> None:
        first = not self.retry_delay
        self.retry_delay = min(DISK_FULL_RETRY_MAX, max(DISK_FULL_RETRY, 2 * self.retry_delay))
        where = self.path.parent if self.path is not None else None
        self.pause.hold("disk_full", f"no space left for the journal ({where}): {exc}")
        # Every waiter looks again: one leads the retry, one that may not wait gives up.
        self._wake_waiters()
        if first:
            _log.error(
                "journal.disk_full",
                path=str(self.path),
                free_bytes=free_bytes(where) if where is not None else None,
                error=str(exc),
                retry_in=self.retry_delay,
            )

    def _space_returned(self) -> None:
        self.retry_delay = 0.0
        self.pause.release_hold("disk_full")
        _log.warning("journal.disk_space_returned", path=str(self.path))

    async def _wait_for_space(self) -> None:
        """Sleep, then retry the group that found the disk full. One waiter leads this
        (``_committing``); the others wait on its progress."""
        self._committing = True
        self._idle = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._retry_scope = scope
                await self.clock.sleep(self.retry_delay)
        finally:
            self._retry_scope = None
            self._committing = False
            self._idle.set()
        await self._commit_next()  # fails again: a longer delay; else space is back

    async def _recover(self) -> bool:
        """Reopen the database after a failed write; learn whether that write landed."""
        assert self.path is not None and self.reopen_db is not None
        try:
            self.db = await self.reopen_db(self.path)
        except Exception as exc:
            if self.closed:
                failed, self._pending = list(self._pending), deque()
                self._fail(failed, exc)
                for op in failed:
                    op.finished = True
                self._wake_waiters()
            else:
                self._disk_full(exc)  # still no room (or worse): keep holding, retry later
                if not is_disk_full(exc):
                    _log.error("journal.reopen_failed", path=str(self.path), error=str(exc))
            return False
        self._suspect = False
        stash, self._failed = self._failed, None
        if stash is None:
            return True
        token, work, outcomes = stash
        db = self.db
        landed = await self.thread.run(lambda: db.get(store.K_GROUP))
        if landed != token:
            return True
        # The write that reported failure is there after all: take it as committed.
        for op, result, error in outcomes:
            with contextlib.suppress(ValueError):
                self._pending.remove(op)
            op.result, op.error, op.finished = result, error, True
        self._apply(work)
        self._space_returned()
        self._wake_waiters()
        return True

    async def reopen(self) -> bool:
        """Close the database and open it again, between two group commits: LevelDB then
        lets go of what it holds for reading (its open tables' mappings, its block cache,
        its memtable's arena), which it otherwise keeps for as long as it is open. The
        next group commit does it first (so a busy writer cannot starve it); commits wait
        meanwhile, and reads queued before it run first. ``False`` when not done: the
        writer is closed, held for a full disk or recovering, or the reopen failed (the
        writer then recovers at once, as after a failed write: it reopens again, and
        holds intake and retries later if that fails too)."""
        if self.closed or self.retry_delay or self._suspect or self.reopen_db is None:
            return False
        if self._reopened is None:
            self._reopened = anyio.Event()
        done = self._reopened
        while not done.is_set():
            if self._committing:
                await self._idle.wait()  # the commit under way; the next one reopens
            else:
                await self._commit_next()  # leads: the reopen, then whatever is queued
        return self._reopen_ok

    async def _reopen_now(self) -> None:
        done, self._reopened = self._reopened, None
        ok = False
        try:
            if not (self.closed or self.retry_delay or self._suspect):
                assert self.path is not None and self.reopen_db is not None
                try:
                    self.db = await self.reopen_db(self.path)
                    ok = True
                except Exception as exc:
                    # Maybe left closed: recovered at once, as after a failed write (and
                    # held, retried later, if that fails too).
                    self._suspect = True
                    _log.error("journal.reopen_failed", path=str(self.path), error=str(exc))
        finally:
            self._reopen_ok = ok
            if done is not None:
                done.set()

    async def recheck_space(self, min_free: int = MIN_FREE_BYTES) -> bool:
        """Held for a full disk: is there ``min_free`` free on the journal's filesystem?
        Then retry a waiting group at once, or (nothing queued) reopen the database if a
        write failed on it and release the hold: the next commit finds out for sure.
        Returns whether intake is no longer held for it."""
        if not self.retry_delay:
            return True
        where = self.path.parent if self.path is not None else None
        free = free_bytes(where) if where is not None else None
        if free is None or free < min_free or self.closed:
            return False
        if self._retry_scope is not None:
            self._retry_scope.cancel()  # the queued group's retry decides, now
            return False
        if self._committing:
            return False
        if self._suspect:
            await self._commit_next()  # leads: the reopen, and whatever got queued
        if self.retry_delay and not self._suspect and not self._pending:
            self._space_returned()
        return not self.retry_delay

    async def _commit(self, ops: Sequence[Op[Any]]) -> Work:
        """Stage ``ops`` here, on the event loop, ``STAGE_CHUNK`` at a time (yielding in
        between), then write the batch in the worker thread: there it is one call that
        releases the GIL for the whole synced write. Staging in the thread instead (its
        many short plyvel calls each drop and retake the GIL) kept the event loop waiting
        for the GIL for the whole staging of a group: 5 ms at p99 in bench_journal."""
        work = self._begin(ops)
        for k in range(0, len(ops), STAGE_CHUNK):
            self._stage(work, ops[k : k + STAGE_CHUNK])
            work.txn.flush()
            if k + STAGE_CHUNK < len(ops):
                await anyio.lowlevel.checkpoint()
        if self._finish(work):
            try:
                await self.thread.run(work.txn.write)
            except Exception as exc:
                raise _WriteFailed(work) from exc
            self.syncs += int(work.txn.sync)
        return work

    def _commit_sync(self, ops: Sequence[Op[Any]]) -> Work:
        """:meth:`_commit` in one synchronous call (tools and benchmarks)."""
        work = self._begin(ops)
        self._stage(work, ops)
        if self._finish(work):
            work.txn.write()
            self.syncs += int(work.txn.sync)
        return work

    def _begin(self, ops: Sequence[Op[Any]] = ()) -> Work:
        before = self.mirror
        # A group of cursor acks only needs no sync of its own unless fsync_acks.
        sync = self.fsync_acks or not ops or any(type(op) is not Ack for op in ops)
        self._groups += 1
        return Work(
            Txn(self.db, sync=sync),
            before.copy(),
            self.clock.time(),
            self.epochs,
            before=before,
            token=self._token + store.pack_u64(self._groups),
        )

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
        if not txn.overlay:
            return False
        txn.put(store.K_GROUP, work.token)  # did it land? (disk full: see _recover)
        txn.flush()
        return True

    def _bytes_between(self, txn: Txn, lo: int, hi: int) -> int:
        """Bytes of the events with ``lo < seq <= hi``: from the size index where it
        covers them, the rest read through the group's transaction."""
        sizes = self.sizes
        a, b = max(lo, sizes.lo), min(hi, sizes.hi)
        covered = sizes.between(a, b) if a < b else None
        if covered is None:
            return self._read_bytes(txn, lo, hi)
        if lo < a:
            covered += self._read_bytes(txn, lo, a)
        if b < hi:
            covered += self._read_bytes(txn, b, hi)
        return covered

    @staticmethod
    def _read_bytes(txn: Txn, lo: int, hi: int) -> int:
        """Bytes of the events with ``lo < seq <= hi``, read from the database."""
        total = 0
        for key, value in txn.scan(store.P_EVENT, start=store.seq_key(lo + 1)):
            if store.key_seq(key) > hi:
                break
            _, attrs, data = store.unpack_event(value)
            total += body_size(attrs, data)
        return total

    def _apply(self, work: Work) -> None:
        before = self.mirror.last_seq
        self.mirror = m = work.mirror
        sizes = self.sizes
        if work.sizes:
            sizes.extend(before + 1, work.sizes)
        sizes.trim(m.min_cursor())
        self.tail.extend(work.rows, m.last_seq)
        self.commits += 1
        self.appended += work.appended
        self.duplicates += work.duplicates
        if self.mirror.last_seq > before:
            event, self._appended = self._appended, anyio.Event()
            event.set()
        self.on_commit()
