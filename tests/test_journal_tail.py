"""The writer's tail of recent events (journal/tail.py): reads answered from it are
exactly what the database answers; it stays bounded, dense and ending at last seq."""

from __future__ import annotations

from pathlib import Path

from argbridge.journal import Journal, store
from argbridge.journal.tail import RecentEvents
from tests.conftest import make_event


def _row(seq: int, size: int) -> tuple[int, bytes]:
    return seq, store.pack_event(1.0, b"{" + b"a" * size + b"}", b"")


async def test_tail_reads_equal_database_reads(tmp_path: Path):
    async with Journal(tmp_path / "j", sinks=["a"]) as j:
        for n in range(40):
            await j.append(make_event(n, size=50 + 37 * (n % 5)))
        writer = j._writer
        assert writer is not None
        tail = writer.tail
        assert len(tail) == 40
        db = writer.db
        for after in (0, 1, 17, 38, 39):
            for limit in (1, 3, 100):
                for max_bytes in (None, 1, 300, 1000, 100_000):
                    got = tail.read(after, limit, max_bytes, writer.mirror.first_seq)
                    assert got == store.read_events(db, after, limit, max_bytes), (
                        after,
                        limit,
                        max_bytes,
                    )
        # A range the tail does not start in: the database's business.
        assert tail.read(40, 10, None, 1) is None


def test_bounded_by_count_and_bytes():
    tail = RecentEvents(max_events=5, max_bytes=10_000)
    tail.extend([_row(s, 10) for s in range(1, 9)], 8)
    assert len(tail) == 5
    assert tail.read(2, 10, None, 1) is None  # seq 3 fell out
    assert [s for s, _ in tail.read(3, 10, None, 1) or []] == [4, 5, 6, 7, 8]
    small = RecentEvents(max_events=100, max_bytes=500)
    small.extend([_row(s, 200) for s in range(1, 6)], 5)
    assert len(small) == 2


def test_gaps_and_foreign_writes_empty_it():
    tail = RecentEvents()
    tail.extend([_row(1, 10), _row(2, 10)], 2)
    tail.extend([_row(5, 10)], 5)  # not dense: only the new group stays
    assert [s for s, _ in tail.read(4, 10, None, 1) or []] == [5]
    assert tail.read(3, 10, None, 1) is None
    tail.extend([], 6)  # last seq moved without rows
    assert len(tail) == 0
    tail.extend([_row(7, 10)], 7)
    assert tail.read(6, 10, None, 8) is None  # retention deleted it (first_seq)
    assert tail.read(6, 10, None, 0) is None  # retention deleted everything
