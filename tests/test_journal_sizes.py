"""The backlog's size index: exact bytes between positions, and the journal's backlog
bytes kept exact by it through appends, acks, rewinds, sink changes and a reopen."""

from __future__ import annotations

import random
from pathlib import Path

from argbridge.journal import Journal, store
from argbridge.journal.records import body_size
from argbridge.journal.sizes import SizeIndex
from tests.conftest import make_event


def test_between_covers_only_what_it_was_given():
    idx = SizeIndex(10)
    assert (idx.lo, idx.hi) == (10, 10)
    assert idx.between(10, 10) == 0
    assert idx.between(9, 10) is None
    idx.extend(11, [5, 7, 11])
    assert idx.between(10, 13) == 23
    assert idx.between(11, 12) == 7
    assert idx.between(12, 14) is None
    idx.trim(11)
    assert idx.between(10, 12) is None
    assert idx.between(11, 13) == 18


def test_a_gap_or_the_cap_restarts_the_index_after_the_new_events():
    idx = SizeIndex(0, cap=4)
    idx.extend(1, [1, 2])
    idx.extend(5, [3])  # not after 2: seqs 3..4 unknown
    assert (idx.lo, idx.hi) == (5, 5)
    idx.extend(6, [1, 1, 1, 1])
    assert idx.between(5, 9) == 4
    idx.extend(10, [1])  # past the cap
    assert (idx.lo, idx.hi) == (10, 10)


def test_trim_drops_the_front_and_keeps_the_totals():
    idx = SizeIndex(0)
    sizes = [random.randrange(1, 1000) for _ in range(20_000)]
    idx.extend(1, sizes)
    for cut in (100, 5000, 12_000, 19_000):
        idx.trim(cut)
        assert idx.lo == cut
        assert idx.between(cut, 20_000) == sum(sizes[cut:])
    idx.trim(50_000)  # past the end: covers nothing more, stays consistent
    assert idx.lo == idx.hi == 20_000
    idx.extend(20_001, [3])
    assert idx.between(20_000, 20_001) == 3


def backlog_read(db: object, low: int) -> int:
    """The backlog bytes as the database says: every event after the lowest cursor."""
    total = 0
    for _, value in db.iterator(start=store.seq_key(low + 1), stop=store.SEQ_END):  # type: ignore[attr-defined]
        _, attrs, data = store.unpack_event(value)
        total += body_size(attrs, data)
    return total


async def test_backlog_bytes_stay_exact_through_acks_rewinds_and_reopen(tmp_path: Path):
    rng = random.Random(15)
    path = tmp_path / "j"
    n = 0
    sinks = ["a", "b"]
    for _reopen in range(3):
        async with Journal(path, sinks=sinks, max_backlog_events=10**6) as j:
            for _ in range(60):
                step = rng.random()
                if step < 0.4:
                    k = rng.randrange(1, 40)
                    sizes = [rng.randrange(10, 900) for _ in range(k)]
                    await j.append_many([make_event(n + i, size=s) for i, s in enumerate(sizes)])
                    n += k
                elif step < 0.8:
                    sink = rng.choice(sinks)
                    await j.ack(sink, rng.randrange(j.cursor(sink), j.last_seq + 1))
                elif step < 0.9:
                    sink = rng.choice(sinks)
                    await j.rewind(sink, rng.randrange(0, j.cursor(sink) + 1))
                else:
                    sinks = ["a", "b"] if sinks == ["a"] else ["a"]
                    await j.set_sinks(sinks)
                stats = j.stats()
                low = min(stats.cursors.values())
                assert stats.backlog_bytes == backlog_read(j._writer.db, low)  # type: ignore[union-attr]
