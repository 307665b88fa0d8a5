"""The group-commit writer: waiters resumed in slices, groups pipelined (one staged while
the other is written), and a failed write's successor put back in order."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import anyio
import pytest

from argbridge.events import CloudEvent
from argbridge.journal import AppendStatus, Journal, store
from argbridge.journal.waiters import WAKE_SLICE
from tests.conftest import make_event
from tests.support.manual_clock import ManualClock

APPENDERS = 64


async def test_waiters_resume_in_slices_and_a_callback_in_between_runs_after_one(
    journal: Journal,
) -> None:
    """After a group commit, a callback that becomes ready while the waiters are being
    woken (as a timer that expires then does) runs after one slice of them, not after
    all of that group's. (How the groups split depends on how long each sync takes;
    the test below holds a write to pin that down.)"""
    writer = journal._writer
    assert writer is not None
    loop = asyncio.get_running_loop()
    resumed = 0
    seen: list[int] = []  # appenders resumed between a commit and the in-between callback
    on_commit = writer.on_commit

    def commit_hook() -> None:
        on_commit()
        before = resumed
        # Runs on the next loop iteration, beside the first slice; what it queues then
        # is ready behind that slice only.
        loop.call_soon(loop.call_soon, lambda: seen.append(resumed - before))

    writer.on_commit = commit_hook
    append = journal.for_source().append

    async def appender(k: int) -> None:
        nonlocal resumed
        for n in (k, APPENDERS + k):
            await append(make_event(n))
            resumed += 1

    async with anyio.create_task_group() as tg:
        for k in range(APPENDERS):
            tg.start_soon(appender, k)

    assert resumed == 2 * APPENDERS
    stats = journal.stats()
    assert stats.appended == 2 * APPENDERS and len(seen) == stats.commits >= 2
    # Per commit: one slice of the group's waiters (and the leader that staged the next
    # group, if one did: it resumes in the landing's own step), then the callback.
    assert all(count <= WAKE_SLICE + 1 for count in seen), seen
    assert max(seen) >= WAKE_SLICE, seen


class _Gate:
    """Holds the first group's write in the writer thread until opened (the injected
    fault is in our own transaction class; the real write runs after, unless ``fail``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: OSError | None = None) -> None:
        self.open = threading.Event()
        self._fail = fail
        self._first = True
        real_write = store.Txn.write

        def gated(txn: store.Txn) -> None:
            if self._first:
                self._first = False
                if not self.open.wait(10):
                    raise TimeoutError("the test never opened the gate")
                if self._fail is not None:
                    raise self._fail
            real_write(txn)

        monkeypatch.setattr(store.Txn, "write", gated)


async def _append_all(journal: Journal, events: list[CloudEvent]) -> list[AppendStatus]:
    """Each event appended by a task of its own, started in order; statuses in order."""
    statuses: list[AppendStatus | None] = [None] * len(events)
    append = journal.for_source().append

    async def one(k: int) -> None:
        statuses[k] = await append(events[k])

    async with anyio.create_task_group() as tg:
        for k in range(len(events)):
            tg.start_soon(one, k)
    return [s for s in statuses if s is not None]


async def test_a_group_is_staged_on_top_of_the_group_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first group's write is held in the thread, the second group is staged
    on top of it: its dedupe sees the first group's ids (not yet in the database), its
    seqs follow on; it is written only after the first, and every seq is dense."""
    gate = _Gate(monkeypatch)
    events = [make_event(n) for n in range(APPENDERS)]
    events[APPENDERS - 1] = make_event(0)  # in the second group: a duplicate of the first's
    async with Journal(tmp_path / "j", sinks=["a"]) as journal:
        writer = journal._writer
        assert writer is not None
        async with anyio.create_task_group() as tg:
            results: list[list[AppendStatus]] = []

            async def run() -> None:
                results.append(await _append_all(journal, events))

            tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            # The first half is in the thread (held), the second staged and waiting.
            assert writer.pipelined == 1 and journal.last_seq == 0
            gate.open.set()
        statuses = results[0]
        assert statuses[-1] is AppendStatus.DUPLICATE
        assert statuses[:-1] == [AppendStatus.APPENDED] * (APPENDERS - 1)
        stats = journal.stats()
        assert (stats.commits, stats.syncs, stats.last_seq) == (2, 2, APPENDERS - 1)
        records = await journal.read("a", 1000)
    assert [r.seq for r in records] == list(range(1, APPENDERS))
    assert [r.event.id for r in records] == [e.id for e in events[:-1]]


async def test_a_failed_write_puts_the_group_staged_on_it_back_behind_its_ops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first group's write fails (ENOSPC, and it did not land) while the second is
    staged on it: the second goes back to the queue unstaged, behind the first group's
    ops; once the retry writes them, both are there in their order, seqs dense, and
    nothing was told APPENDED before it was."""
    clock = ManualClock()
    gate = _Gate(monkeypatch, fail=OSError(errno.ENOSPC, "No space left on device"))
    events = [make_event(n) for n in range(APPENDERS)]
    async with Journal(tmp_path / "j", sinks=["a"], clock=clock) as journal:
        writer = journal._writer
        assert writer is not None
        async with anyio.create_task_group() as tg:
            results: list[list[AppendStatus]] = []

            async def run() -> None:
                results.append(await _append_all(journal, events))

            tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            assert writer.pipelined == 1
            gate.open.set()
            with anyio.fail_after(10):
                await clock.wait_sleeping()  # the failed group waits to be retried
            assert journal.pause.reason == "disk_full" and journal.last_seq == 0
            assert results == []
            clock.advance(clock.pending[0])
        assert results == [[AppendStatus.APPENDED] * APPENDERS]
        assert not journal.pause.is_paused
        records = await journal.read("a", 1000)
    assert [r.seq for r in records] == list(range(1, APPENDERS + 1))
    assert [r.event.id for r in records] == [e.id for e in events]
