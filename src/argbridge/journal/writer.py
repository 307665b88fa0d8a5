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
group once all are woken. One leader at a time: two (one syncing, one gathering) halved
the groups and doubled the syncs in bench/bench_journal.py. Under live traffic a small
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
"""

from __future__ import annotations

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
from argbridge.journal import store
from argbridge.journal.backpressure import IntakePaused, PauseSignal
from argbridge.journal.ops import Ack, Append, Mirror, Op, Work
from argbridge.journal.ops import append_run as _append_run
from argbridge.journal.records import body_size
from argbridge.journal.sizes import SizeIndex
from argbridge.journal.store import Txn
from argbridge.journal.tail import RecentEvents
from argbridge.journal.thread import JournalThread
from argbridge.journal.waiters import Waiters, Waker
from argbridge.logging import get_logger

R = TypeVar("R")

#: Ops staged per slice of event-loop time (5-6 µs each for 1 KiB appends: ~0.1 ms).
STAGE_CHUNK = 16
#: With no write in flight, a leader that finds this many ops queued (by several waiters)
#: commits half of them, so the other half is staged while the first syncs
#: (:meth:`Writer._group_size`).
SPLIT_AT = 16
#: Disk full: the failed group is retried after this delay, doubling up to the max.
DISK_FULL_RETRY = 0.5
DISK_FULL_RETRY_MAX = 5.0
#: Free bytes at which a held journal with nothing queued lets intake resume.
MIN_FREE_BYTES = 1024 * 1024
#: Group linger: a leader waits ``group_linger`` only while groups are this small
#: (the queue and the previous group with appends) ...
LINGER_BELOW = 8
#: ... and the previous group with appends began less than this many lingers ago (live
#: traffic of more than ~1 / (4 x linger) appends a second: 125/s for 2 ms); a lone
#: append in a quiet journal commits at once.
LINGER_WINDOW = 4

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


#: The ops a group may hold to be staged on top of a group in flight (their staging reads
#: through the transaction chain only; see :meth:`Writer._commit_next`).
_CHAINABLE = (Append, Ack)


class _Group:
    """A group commit from its gathering to its landing: its ops, their waiters (the
    queue's generation when it was gathered), its staged work, and whether (``done``)
    and how (``ok``) its write ended."""

    __slots__ = ("done", "ok", "ops", "waiters", "work")

    def __init__(self, ops: list[Op[object]], waiters: Waiters) -> None:
        self.ops = ops
        self.waiters = Waiters()
        self.waiters.adopt(waiters)
        self.work: Work | None = None
        self.ok = False
        self.done = anyio.Event()
        for op in ops:
            op.group = self


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

    async def _reopen(self, path: Path) -> plyvel.DB:
        """Close the writer's database and open it again (the disk-full recovery), after
        the reads queued before. On failure the database stays closed: reads refuse."""
        writer = self._writer

        def reopen() -> plyvel.DB:
            writer.db_down = True
            writer.db.close()
            db = writer.db = store.open_db(path)
            writer.db_down = False
            return db

        return await self._thread.run(reopen)

    async def close_db(self) -> None:
        """Close the database after the reads queued before (reads after this raise
        JournalClosed); the thread ends."""
        await self._thread.run(self._writer.db.close)
        self._thread.close()

    async def run(self, fn: Callable[[plyvel.DB], R]) -> R:
        writer = self._writer

        def guarded() -> R:
            if writer.closed:  # checked again in the thread that close_db runs in
                raise JournalClosed("the journal is closed")
            if writer.db_down:
                raise JournalError("the journal is unavailable (reopening after a failed write)")
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
        db: plyvel.DB,
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
    ) -> None:
        self.db = db
        #: Gather window of a small group with appends under live traffic (see
        #: :meth:`_lingers`): 0 commits every group at once.
        self.group_linger = group_linger
        #: The size and the start (monotonic) of the last group that held appends.
        self._last_group = 0
        self._last_group_at = float("-inf")
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
        self.reopen_db: Callable[[Path], Awaitable[plyvel.DB]] | None = None
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
        #: A leader is gathering or staging a group (one at a time, on the event loop).
        self._committing = False
        #: The group whose write batch is in the writer thread (at most one): the next
        #: group may be staged on top of it meanwhile (see :meth:`_lead`).
        self._flight: _Group | None = None
        #: Groups staged on top of a group in flight.
        self.pipelined = 0
        #: The thread the group commits' write batches (and their syncs) run in.
        self.thread = JournalThread("argbridge-journal-write")
        #: Set while no leader is active and no write is in flight.
        self._idle = anyio.Event()
        self._idle.set()
        #: The waiters whose ops are queued (not in a group yet); a gathered group adopts
        #: them (see journal/waiters.py).
        self._queued = Waiters()
        self._waker = Waker()
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

    # -- submitting --------------------------------------------------------------------

    def enqueue(self, op: Op[R]) -> Op[R]:
        if self.closed:
            raise JournalClosed("the journal is closed")
        self._pending.append(op)  # type: ignore[arg-type]
        return op

    async def submit(self, op: Op[R]) -> R:
        return await self.wait(self.enqueue(op))

    async def wait(self, op: Op[R], *, nowait: bool = False) -> R:
        """Wait for ``op`` to commit, leading group commits when nobody else is. With
        ``nowait``, raise :class:`IntakePaused` instead of waiting for disk space."""
        try:
            while not op.finished:
                group = op.group
                if group is not None:  # staged or in flight: its landing wakes us
                    await group.waiters.slot().wait()  # type: ignore[attr-defined]
                    continue
                if self.retry_delay and nowait and self.withdraw((op,)):
                    raise IntakePaused("intake paused (disk_full); retry later")
                if not self._committing:
                    if self.retry_delay:
                        await self._wait_for_space()
                        continue
                    await self._lead(op)
                else:
                    await self._queued.slot().wait()
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
        gone); whether any was. Ops in a group being committed stay: its outcome
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
            while not self._idle.is_set():
                await self._idle.wait()
            while self._pending:
                await self._commit_next()
        self.thread.close()
        self._appended.set()

    # -- committing --------------------------------------------------------------------

    def _wake_waiters(self) -> None:
        """Wake every waiter of the queue: each re-checks its op (one leads)."""
        self._waker.wake(self._queued.take())

    def _promote(self) -> None:
        """No leader, ops queued: wake the queue's waiters (one of them leads)."""
        if not self._committing and self._pending:
            self._wake_waiters()

    def _call_leader(self) -> None:
        """A leader left with ops queued: wake the queue's first slice of waiters (one
        of them leads), not the whole queue: the next group adopts the rest."""
        if self._committing or not self._pending:
            return
        first = self._queued.take_first()
        if first is not None:
            first.set()

    def _settle(self) -> None:
        """Set :attr:`_idle` once no leader is active and no write is in flight."""
        if not self._committing and self._flight is None:
            self._idle.set()

    async def _commit_next(self) -> None:
        """Lead until the queue is empty, then wait for the last write to land (closing,
        disk-full retries, tools)."""
        if not self._committing:
            await self._lead(None)
        while self._flight is not None:
            await self._flight.done.wait()

    async def _lead(self, mine: Op[Any] | None) -> None:
        """Lead group commits: gather a group, stage it, start its write; again, while
        ops are queued, until our own op (``mine``) is done.

        Pipelined: a group is staged while the group before it is being written (its
        transaction reads through that one's writes, its mirror starts from that one's);
        its write starts once that one's has landed, and only if it succeeded: if not,
        the group goes back to the queue unstaged, right behind the failed group's ops
        (the order of seqs and of acks never changes). Only groups of appends and acks
        are staged on top of a group in flight (every other op waits for it to land:
        several read the database outside the transaction). A write lands in
        :meth:`_landed`, a callback: no task waits for it. A leader leaves once its own
        op is in a group or done, waking one slice of the queue's waiters if ops are
        queued (:meth:`_call_leader`); groups alternate, each made of the waiters the
        one before last woke, so the event loop's half of a group (waking, appending,
        staging) runs while the thread syncs the other."""
        self._committing = True
        if self._idle.is_set():
            self._idle = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                while await self._lead_one() and self._pending and not self.retry_delay:
                    if mine is not None and mine.finished:
                        return
        finally:
            self._committing = False
            self._settle()
            self._call_leader()

    async def _lead_one(self) -> bool:
        """Gather, stage and start one group (see :meth:`_lead`); False if there was
        nothing to gather, or the database could not be reopened."""
        # Let appenders that are already runnable queue their ops first, and those still
        # being woken slice by slice: a bigger group costs the same sync.
        await anyio.lowlevel.checkpoint()
        await self._waker.settled()
        if self._suspect and not await self._recover():
            return False
        if self.group_linger > 0 and self._lingers():
            await self.clock.sleep(self.group_linger)
        n = self._group_size()
        if not n:
            return False
        ops = [self._pending.popleft() for _ in range(n)]
        if self.group_linger > 0 and any(type(op) is Append for op in ops):
            self._last_group = len(ops)
        group = _Group(ops, self._queued)
        parent = self._flight
        if parent is not None and not all(type(op) in _CHAINABLE for op in ops):
            await parent.done.wait()
            if not parent.ok:
                self._requeue(group, parent)
                return True
            parent = None
        try:
            work = group.work = self._begin(ops, parent.work if parent is not None else None)
            for k in range(0, len(ops), STAGE_CHUNK):
                self._stage(work, ops[k : k + STAGE_CHUNK])
                work.txn.flush()
                if k + STAGE_CHUNK < len(ops):
                    await anyio.lowlevel.checkpoint()
            writes = self._finish(work)
        except Exception as exc:
            self._fail(ops, exc)
            self._done(group)
            return True
        if parent is not None:
            self.pipelined += 1
            await parent.done.wait()
            if not parent.ok:
                self._requeue(group, parent)
                return True
            work.txn.detach()
        if not writes:
            self._apply(work)
            self._done(group)
            return True
        self._flight = group
        self.thread.start(work.txn.write, lambda _, error: self._landed(group, error))
        return True

    def _landed(self, group: _Group, error: BaseException | None) -> None:
        """A group's write ended (on the event loop): apply it, or fail or requeue it."""
        work = group.work
        assert work is not None
        self._flight = None
        if error is not None:
            # Never written to this handle again (see the module docstring).
            self._suspect = True
            if is_disk_full(error) and not self.closed:
                self._hold_for_space(group.ops, work, error)
                self._unstage(group)
                return
            self._fail(group.ops, error)
        else:
            self.syncs += int(work.txn.sync)
            group.ok = True
            self._apply(work)
            if self.retry_delay:
                self._space_returned()
        self._done(group)

    def _done(self, group: _Group) -> None:
        """The group's ops are finished: wake their waiters."""
        for op in group.ops:
            op.finished = True
            op.group = None
        self._end(group)

    def _unstage(self, group: _Group) -> None:
        """The group's ops are queued again: their waiters look again."""
        for op in group.ops:
            op.result = op.error = op.group = None
        self._end(group)

    def _end(self, group: _Group) -> None:
        group.work = None
        group.done.set()
        self._waker.wake(group.waiters.take())
        self._settle()
        self._promote()

    def _group_size(self) -> int:
        """How many queued ops the next group takes: all (up to ``max_group_commit``),
        except that with no write in flight a queue of ``SPLIT_AT`` ops or more, from
        two waiters or more, is split in two halves, the second staged while the first
        syncs; from then on the groups alternate. (One caller's batch, ``append_many``,
        stays one group: one sync.)"""
        n = min(len(self._pending), self.max_group_commit)
        if self._flight is None and n >= SPLIT_AT and self._queued.count >= 2:
            n = (n + 1) // 2
        return n

    def _requeue(self, group: _Group, parent: _Group) -> None:
        """``parent``'s write failed: ``group`` (staged on top of it, or waiting for it)
        goes back to the queue unstaged, right behind whatever of ``parent``'s ops went
        back to its front (a full disk), so the queue's order is the order they came in."""
        theirs = {id(op) for op in parent.ops}
        pending = self._pending
        k = 0
        while k < len(pending) and id(pending[k]) in theirs:
            k += 1
        pending.rotate(-k)
        pending.extendleft(reversed(group.ops))
        pending.rotate(k)
        self._unstage(group)

    def _lingers(self) -> bool:
        """Whether the leader waits ``group_linger`` for more ops before committing: the
        queue holds an append (an ack-only group never waits), the groups are small
        (under ``LINGER_BELOW``: a backlog already fills them) and appends are arriving
        (the previous group with appends began less than ``LINGER_WINDOW`` lingers ago).
        At a few hundred appends a second each request otherwise paid its own group: a
        thread round trip and an ``fdatasync``. The cost: at most ``group_linger`` more
        before an append's 2xx (it is still only answered after its sync)."""
        pending = self._pending
        if self.closed or self.retry_delay or len(pending) >= LINGER_BELOW:
            return False
        if not any(type(op) is Append for op in pending):
            return False
        now = self.clock.monotonic()
        recent = now - self._last_group_at < LINGER_WINDOW * self.group_linger
        small = self._last_group < LINGER_BELOW
        self._last_group_at = now
        return recent and small

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
        if self._idle.is_set():
            self._idle = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._retry_scope = scope
                await self.clock.sleep(self.retry_delay)
        finally:
            self._retry_scope = None
            self._committing = False
            self._settle()
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
        if self._committing or self._flight is not None:
            return False
        if self._suspect:
            await self._commit_next()  # leads: the reopen, and whatever got queued
        if self.retry_delay and not self._suspect and not self._pending:
            self._space_returned()
        return not self.retry_delay

    def _commit_sync(self, ops: Sequence[Op[Any]]) -> Work:
        """A group commit in one synchronous call, not pipelined (tools, benchmarks)."""
        work = self._begin(ops)
        self._stage(work, ops)
        if self._finish(work):
            work.txn.write()
            self.syncs += int(work.txn.sync)
        return work

    def _begin(self, ops: Sequence[Op[Any]] = (), base: Work | None = None) -> Work:
        """A group's work: on the committed state, or on ``base`` (the group in flight)."""
        before = self.mirror if base is None else base.mirror
        # A group of cursor acks only needs no sync of its own unless fsync_acks.
        sync = self.fsync_acks or not ops or any(type(op) is not Ack for op in ops)
        self._groups += 1
        return Work(
            Txn(self.db, sync=sync, parent=base.txn if base is not None else None),
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
