"""Giving the engine's memory back: the memtable flush and the reopen between commits."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import plyvel
import pytest

from argbridge.journal import AppendStatus, Journal, engine, store
from tests.conftest import make_event

pytestmark = pytest.mark.timeout(30)


def test_flush_memtable_flushes_only_a_memtable_worth_it(tmp_path: Path) -> None:
    db = engine.open_db(tmp_path / "j")
    try:
        db.put(b"e" + store.pack_u64(1), b"x" * 1000)
        assert not store.flush_memtable(db)  # a few bytes: left alone
        with db.write_batch() as wb:
            for seq in range(2, 3000):
                wb.put(b"e" + store.pack_u64(seq), b"x" * 1000)
        assert store.memory_usage(db) > store.BLOCK_CACHE_SIZE + store.FLUSH_MEMTABLE_ABOVE
        assert store.flush_memtable(db)
        assert store.memory_usage(db) < store.FLUSH_MEMTABLE_ABOVE
        assert db.get(b"e" + store.pack_u64(2999)) == b"x" * 1000
    finally:
        db.close()


async def test_release_memory_reopens_and_keeps_everything(journal: Journal) -> None:
    events = [make_event(n, size=1000) for n in range(2500)]
    await journal.append_many(events)
    await journal.ack("a", 700)
    await journal.set_state("sse:last_id:r1", "42")
    writer = journal._writer
    assert writer is not None
    before = writer.db
    assert store.memory_usage(before) > store.BLOCK_CACHE_SIZE + store.FLUSH_MEMTABLE_ABOVE

    assert await journal.release_memory()

    assert writer.db is not before and before.closed
    assert store.memory_usage(writer.db) < store.FLUSH_MEMTABLE_ABOVE  # flushed, then reopened
    assert (journal.last_seq, journal.cursor("a")) == (2500, 700)
    assert [r.event for r in await journal.read("a", 5000)] == events[700:]
    assert await journal.get_state("sse:last_id:r1") == "42"
    assert await journal.append(events[3]) is AppendStatus.DUPLICATE  # dedupe knows it
    assert await journal.append(make_event(5000)) is AppendStatus.APPENDED


async def test_a_closed_journal_releases_nothing(tmp_path: Path) -> None:
    async with Journal(tmp_path / "j", sinks=["a"]) as journal:
        await journal.append(make_event(1))
    assert not await journal.release_memory()


async def test_a_busy_writer_reopens_before_its_next_group(journal: Journal) -> None:
    """A reopen asked for while a group commit is under way waits for that commit and
    is done by the next one, first: a busy writer cannot starve it, and no write lands
    on the database while it is closed."""
    writer = journal._writer
    assert writer is not None
    real_reopen = writer.reopen_db
    assert real_reopen is not None
    seen_at: list[int] = []

    async def reopen_db(path: Path) -> plyvel.DB:
        seen_at.append(journal.last_seq)
        return await real_reopen(path)

    writer.reopen_db = reopen_db
    gate = threading.Event()
    done = anyio.Event()
    result: list[bool] = []
    old = writer.db

    async def reopen() -> None:
        result.append(await writer.reopen())
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.thread.run, gate.wait)  # the write thread is busy
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(journal.append, make_event(1))  # its group waits for the thread
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(reopen)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set() and writer.db is old  # not under a commit
        tg.start_soon(journal.append, make_event(2))  # queued behind the reopen
        await anyio.wait_all_tasks_blocked()
        gate.set()
        await done.wait()

    assert result == [True] and writer.db is not old
    assert seen_at == [1]  # after the first group, before the second
    assert journal.last_seq == 2
    assert [r.event for r in await journal.read("a", 10)] == [make_event(1), make_event(2)]


async def test_a_failed_reopen_is_recovered_at_once(journal: Journal) -> None:
    writer = journal._writer
    assert writer is not None
    real_reopen = writer.reopen_db
    assert real_reopen is not None
    calls = 0

    async def reopen_db(path: Path) -> plyvel.DB:
        nonlocal calls
        calls += 1
        db = await real_reopen(path)
        if calls == 1:
            raise OSError("open failed")
        return db

    writer.reopen_db = reopen_db
    await journal.append(make_event(1))
    assert not await writer.reopen()
    # Recovered at once, as after a failed write: reopened again.
    assert calls == 2
    assert await journal.append(make_event(2)) is AppendStatus.APPENDED
    assert calls == 2
    assert [r.event for r in await journal.read("a", 10)] == [make_event(1), make_event(2)]
