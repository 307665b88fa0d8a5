"""The journal: dedupe, group commit, cursors, retention, backpressure, retries, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from argbridge.errors import JournalClosed, JournalError
from argbridge.journal import AppendStatus, Journal, JournalRecord, engine, store
from argbridge.journal.log import decode_records
from argbridge.journal.ops import Op, Work
from argbridge.journal.records import encode_event, encoded
from argbridge.journal.roles import ExactlyOnceSinkJournal
from tests.conftest import make_event


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_append_reports_duplicates_not_errors(journal: Journal):
    ev = make_event(1)
    assert await journal.append(ev) is AppendStatus.APPENDED
    assert await journal.append(ev) is AppendStatus.DUPLICATE
    assert await journal.append_many([ev, make_event(2), make_event(2)]) == [
        AppendStatus.DUPLICATE,
        AppendStatus.APPENDED,
        AppendStatus.DUPLICATE,
    ]
    stats = journal.stats()
    assert (stats.appended, stats.duplicates, stats.last_seq) == (2, 3, 2)


async def test_concurrent_appends_share_transactions(journal: Journal):
    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(journal.append, make_event(n, size=100))
    stats = journal.stats()
    assert stats.appended == 200
    assert stats.last_seq == 200
    # 200 concurrent appenders must not cost 200 fsyncs: they queue behind one commit.
    assert stats.commits < 20, stats.commits
    records = await journal.read("a", 1000)
    assert [r.seq for r in records] == list(range(1, 201))


async def test_a_large_group_keeps_append_order_and_dense_seqs(journal: Journal):
    # 301 appends in one group commit, one of them a duplicate in the middle.
    events = [make_event(n) for n in range(300)]
    events.insert(150, make_event(7))
    statuses = await journal.append_many(events)
    assert statuses.count(AppendStatus.DUPLICATE) == 1 and statuses[150] is AppendStatus.DUPLICATE
    assert journal.stats().commits == 1
    records = await journal.read("a", 1000)
    assert [r.seq for r in records] == list(range(1, 301))
    assert [r.event for r in records] == [e for i, e in enumerate(events) if i != 150]


async def test_committed_events_survive_reopen(tmp_path: Path):
    path = tmp_path / "j.db"
    async with Journal(path, sinks=["a"]) as j:
        await j.append_many([make_event(n) for n in range(5)])
        await j.ack("a", 2)
        await j.set_state("sse:last_id:r1", "42")
    async with Journal(path, sinks=["a"]) as j:
        assert j.last_seq == 5
        assert j.cursor("a") == 2
        assert [r.event for r in await j.read("a", 10)] == [make_event(n) for n in range(2, 5)]
        assert await j.get_state("sse:last_id:r1") == "42"
        assert await j.append(make_event(0)) is AppendStatus.DUPLICATE
        # A group commit is at most one synced write batch (none when it wrote nothing:
        # here, one duplicate).
        assert (j.stats().syncs, j.stats().commits) == (0, 1)
    assert (path / "CURRENT").exists()  # a LevelDB database


async def test_cursors_move_forward_only_and_per_sink(journal: Journal):
    await journal.append_many([make_event(n) for n in range(10)])
    assert journal.backlog("a") == journal.backlog("b") == 10
    batch = await journal.read("a", 4)
    assert [r.seq for r in batch] == [1, 2, 3, 4]
    # Reading does not move the cursor: only an ack does.
    assert [r.seq for r in await journal.read("a", 4)] == [1, 2, 3, 4]
    await journal.ack("a", 4)
    assert journal.cursor("a") == 4
    assert journal.cursor("b") == 0
    await journal.ack("a", 2)  # stale ack: ignored
    assert journal.cursor("a") == 4
    await journal.ack("a", 999)  # clamped to the last committed event
    assert journal.cursor("a") == 10
    assert journal.backlog("a") == 0
    with pytest.raises(JournalError, match="unknown sink"):
        await journal.ack("nope", 1)


async def test_rewind_replays_and_a_stale_in_flight_ack_is_ignored(journal: Journal):
    await journal.append_many([make_event(n) for n in range(6)])
    await journal.read("a", 6)
    await journal.ack("a", 6)
    batch = await journal.read("a", 10)
    assert batch == []
    await journal.append(make_event(6))
    batch = await journal.read("a", 10)  # in flight: seq 7
    await journal.rewind("a", 2)
    await journal.ack("a", batch[-1].seq)  # belongs to the pre-rewind read
    assert journal.cursor("a") == 2
    assert [r.seq for r in await journal.read("a", 10)] == [3, 4, 5, 6, 7]


async def test_first_seq_since(tmp_path: Path):
    clock = FakeClock()
    async with Journal(tmp_path / "j.db", sinks=["a"], clock=clock) as j:
        await j.append(make_event(0))
        clock.now += 100
        await j.append(make_event(1))
        assert await j.first_seq_since(clock.now - 50) == 2
        assert await j.first_seq_since(clock.now + 1) is None


async def test_retention_deletes_only_what_every_sink_passed_and_keeps_tombstones(
    tmp_path: Path,
):
    clock = FakeClock()
    async with Journal(
        tmp_path / "j.db", sinks=["a", "b"], clock=clock, retain_delivered=60, dedupe_window=600
    ) as j:
        await j.append_many([make_event(n) for n in range(5)])
        await j.ack("a", 5)
        await j.ack("b", 3)
        assert await j.run_retention() == 0  # not old enough yet
        clock.now += 61
        assert await j.run_retention() == 3  # b has passed 1..3 only
        assert [r.seq for r in await j.read_after(0, 10)] == [4, 5]
        # A deleted event seen again inside the dedupe window is still a duplicate.
        assert await j.append(make_event(0)) is AppendStatus.DUPLICATE
        clock.now += 600
        await j.run_retention()
        assert await j.append(make_event(0)) is AppendStatus.APPENDED


async def test_a_removed_sink_does_not_hold_retention(tmp_path: Path):
    path = tmp_path / "j.db"
    async with Journal(path, sinks=["a", "gone"]) as j:
        await j.append_many([make_event(n) for n in range(3)])
        await j.ack("a", 3)
    async with Journal(path, sinks=["a"], retain_delivered=0) as j:
        assert j.stats().cursors == {"a": 3}
        assert await j.run_retention() == 3


async def test_a_new_sink_starts_at_the_oldest_retained_event(tmp_path: Path):
    path = tmp_path / "j.db"
    async with Journal(path, sinks=["a"]) as j:
        await j.append_many([make_event(n) for n in range(3)])
    async with Journal(path, sinks=["a", "new"]) as j:
        assert len(await j.read("new", 10)) == 3


async def test_backpressure_pauses_and_resumes_with_hysteresis(tmp_path: Path):
    async with Journal(
        tmp_path / "j.db", sinks=["a"], max_backlog_events=10, resume_ratio=0.5
    ) as j:
        await j.append_many([make_event(n) for n in range(9)])
        assert not j.pause.is_paused
        await j.append(make_event(9))
        assert j.pause.is_paused

        resumed = anyio.Event()

        async def waiter() -> None:
            await j.pause.wait_resumed()
            resumed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not resumed.is_set()
            await j.ack("a", 4)  # backlog 6 > 5: still paused (hysteresis)
            await anyio.wait_all_tasks_blocked()
            assert j.pause.is_paused and not resumed.is_set()
            await j.ack("a", 5)  # backlog 5 <= 5: resume
            with anyio.fail_after(5):
                await resumed.wait()
        assert not j.pause.is_paused


async def test_backpressure_on_bytes(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["a"], max_backlog_bytes=4000) as j:
        await j.append_many([make_event(n, size=1000) for n in range(3)])
        assert not j.pause.is_paused
        await j.append(make_event(3, size=1000))
        assert j.pause.is_paused
        assert j.stats().backlog_bytes > 4000
        await j.ack("a", 4)
        assert not j.pause.is_paused
        assert j.stats().backlog_bytes == 0


async def test_wait_for_events_wakes_on_commit(journal: Journal):
    got = anyio.Event()

    async def reader() -> None:
        await journal.wait_for_events(0)
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert not got.is_set()
        await journal.append(make_event(1))
        with anyio.fail_after(5):
            await got.wait()


async def test_retries_and_dead_letters(tmp_path: Path):
    clock = FakeClock()
    async with Journal(tmp_path / "j.db", sinks=["w"], clock=clock, retain_delivered=0) as j:
        await j.append_many([make_event(n) for n in range(3)])
        batch = await j.read("w", 10)
        await j.schedule_retry("w", batch[0], attempt=1, due_at=clock.now + 5, error="HTTP 503")
        await j.schedule_retry("w", batch[1], attempt=1, due_at=clock.now + 60, error="timeout")
        await j.ack("w", 3)
        # Retention may delete the journaled events: retries keep their own copy.
        assert await j.run_retention() == 3
        assert await j.due_retries("w", clock.now) == []
        assert await j.next_retry_due("w") == clock.now + 5
        clock.now += 5
        (due,) = await j.due_retries("w", clock.now)
        assert due.event == batch[0].event and due.attempt == 1 and due.last_error == "HTTP 503"
        await j.clear_retry("w", due.event.id)
        clock.now += 55
        (due,) = await j.due_retries("w", clock.now)
        await j.dead_letter("w", due, "gave up after 8 attempts", attempts=8)
        assert await j.count_retries("w") == 0
        (dl,) = await j.dead_letters("w")
        assert dl.event == batch[1].event and dl.attempts == 8
        assert await j.count_dead_letters() == 1
        assert await j.requeue_dead_letters("w", dlids=[dl.dlid]) == 1
        assert await j.count_dead_letters() == 0
        (again,) = await j.due_retries("w", clock.now)
        assert again.event == batch[1].event and again.attempt == 0


class _Failing(Op[None]):
    """Stages a write, then fails: its write must be rolled back, the group's kept."""

    def apply(self, work: Work) -> None:
        work.txn.put(store.state_key("half-done"), b"x")
        work.mirror.cursors["a"] = 999
        raise RuntimeError("boom")


async def test_a_failing_operation_does_not_spoil_the_group(journal: Journal):
    errors: list[Exception] = []
    results: list[object] = []

    async def bad() -> None:
        try:
            await journal._writer.submit(_Failing())  # type: ignore[union-attr]
        except JournalError as exc:
            errors.append(exc)

    async def good(n: int) -> None:
        results.append(await journal.append(make_event(n)))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(good, n)
        tg.start_soon(bad)
        for n in range(5, 10):
            tg.start_soon(good, n)
    assert len(errors) == 1 and "operation failed" in str(errors[0])
    assert results == [AppendStatus.APPENDED] * 10
    assert journal.last_seq == 10
    assert journal.cursor("a") == 0
    assert await journal.get_state("half-done") is None


async def test_a_cancelled_appender_does_not_strand_the_others(journal: Journal):
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(journal.append, make_event(n))
        with anyio.CancelScope() as scope:
            scope.cancel()
            await journal.append(make_event(99))
    # The cancelled append may or may not have committed; the 20 others all did.
    assert journal.last_seq >= 20
    assert len(await journal.read_after(0, 100)) == journal.last_seq


async def test_closed_journal_refuses_writes(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["a"]) as j:
        pass
    with pytest.raises(JournalClosed):
        await j.append(make_event(1))


async def test_unopenable_journal_is_a_clear_error(tmp_path: Path):
    (tmp_path / "file.db").write_bytes(b"not a directory")
    with pytest.raises(JournalError, match="cannot open journal"):
        async with Journal(tmp_path / "file.db", sinks=["a"]):
            pass


async def test_a_group_commit_is_one_sync_whatever_it_holds(tmp_path: Path):
    # (Replaces the v1 test of background WAL checkpoints: LevelDB compacts in its own
    # thread, there is no checkpoint left on or off the commit path.)
    path = tmp_path / "j.db"
    async with Journal(path, sinks=["a"]) as j:
        await j.append_many([make_event(n, size=4000) for n in range(1500)])
        records = await j.read("a", 10)
        async with anyio.create_task_group() as tg:
            for n in range(1500, 1600):
                tg.start_soon(j.append, make_event(n))
            tg.start_soon(j.ack, "a", 5)
            tg.start_soon(j.set_state, "k", "v")
            tg.start_soon(j.schedule_retry, "a", records[0], 1, 0.0, "x")
            tg.start_soon(j.dead_letter, "a", records[1], "gone", 1)
        stats = j.stats()
        assert stats.syncs == stats.commits < 20
    async with Journal(path, sinks=["a"]) as j:
        assert j.last_seq == 1600
        assert j.cursor("a") == 5
        assert await j.count_retries("a") == await j.count_dead_letters("a") == 1


def test_records_read_are_the_records_init_makes_and_stay_immutable():
    e = make_event(1)
    body = e.to_json()
    (made,) = decode_records([(7, store.pack_event(12.5, *encode_event(e)))])
    assert made == JournalRecord(7, None, len(body), 12.5, body)
    assert (made.seq, made.size, made.appended_at, made.body) == (7, len(body), 12.5, body)
    assert made.event == e  # decoded on first use
    with pytest.raises(AttributeError, match="immutable"):
        made.seq = 8


async def test_sources_and_sinks_get_their_narrow_role_only(journal: Journal):
    source, sink = journal.for_source(), journal.for_sink()
    assert await source.append(make_event(1)) is AppendStatus.APPENDED
    await source.set_state("k", "v")
    assert await sink.get_state("k") == "v"
    (record,) = await sink.read("a", 10)
    await sink.ack("a", record.seq)
    assert sink.cursor("a") == 1
    # A source cannot read or ack; a sink cannot append, alert, rewind or run retention.
    for name in ("read", "ack", "cursor", "dead_letter", "rewind", "run_retention", "stats"):
        assert not hasattr(source, name), name
    for name in ("append", "append_many", "alert", "rewind", "last_seq", "run_retention", "pause"):
        assert not hasattr(sink, name), name
    assert not isinstance(sink, ExactlyOnceSinkJournal)
    # The exactly-once sink's role adds what its reconciliation with Kafka's progress
    # topic needs: the newest sequence, setting its own cursor back, its own alerts.
    eos = journal.for_exactly_once_sink()
    assert isinstance(eos, ExactlyOnceSinkJournal) and eos.last_seq == 1
    assert await eos.alert(make_event(2, type_="argbridge.sink.fenced")) is AppendStatus.APPENDED
    await eos.rewind("a", 0)
    assert eos.cursor("a") == 0
    for name in ("append", "append_many", "run_retention", "pause", "stats"):
        assert not hasattr(eos, name), name


async def test_records_carry_attributes_and_data_as_stored(journal: Journal):
    e = make_event(1, partitionkey="run-1", extensions={"traceparent": "00-ab"})
    await journal.append(e)
    await journal.append(make_event(2).with_changes(data=None))
    first, second = await journal.read_after(0, 10)
    assert first.attributes == e.attributes()
    assert first.data_json == e.data_bytes()
    assert first.body == e.to_json() and first.size == len(e.to_json())
    assert second.data_json == b"" and second.event.data is None


class _Overwrite(Op[None]):
    """Overwrites state ``k`` (flushed to the batch by an earlier slice), then fails."""

    def apply(self, work: Work) -> None:
        work.txn.put(store.state_key("k"), store.pack_state(0.0, "bad"))
        raise RuntimeError("boom")


async def test_a_group_staged_in_slices_is_still_one_atomic_batch(tmp_path: Path):
    from argbridge.journal.ops import Append, DeleteState, SetState
    from argbridge.journal.writer import STAGE_CHUNK

    path = tmp_path / "j"
    async with Journal(path, sinks=["a"]) as j:
        writer = j._writer
        assert writer is not None
        ops: list[Op[Any]] = []
        ops += [Append(*encoded(e)) for e in map(make_event, range(10))]
        ops += [SetState("k", "1"), SetState("gone", "x")]
        ops += [Append(*encoded(e)) for e in map(make_event, range(10, 2 * STAGE_CHUNK))]
        ops += [SetState("k", "2"), DeleteState("gone"), _Overwrite()]
        for op in ops:
            writer.enqueue(op)
        for op in ops[:-1]:
            await writer.wait(op)
        with pytest.raises(JournalError, match="operation failed"):
            await writer.wait(ops[-1])
        assert (j.stats().commits, j.stats().syncs) == (1, 1)
    async with Journal(path, sinks=["a"]) as j:
        assert j.last_seq == 2 * STAGE_CHUNK
        assert await j.get_state("k") == "2"
        assert await j.get_state("gone") is None


async def test_ack_only_commits_skip_their_fsync_and_still_persist(tmp_path: Path):
    """Issue 17 item 6: a group of acks only is written as an unsynced write batch
    (journal.fsync_acks = false, the default): no fsync of its own; any group with an
    append is still synced, and the cursor survives a reopen."""
    path = tmp_path / "j"
    async with Journal(path, sinks=["a"]) as j:
        await j.append_many([make_event(n) for n in range(3)])
        syncs = j.stats().syncs
        await j.ack("a", 2)
        assert (j.stats().syncs, j.stats().commits) == (syncs, 2)
        await j.append(make_event(3))
        assert j.stats().syncs == syncs + 1
    async with Journal(path, sinks=["a"]) as j:
        assert j.cursor("a") == 2
    async with Journal(path, sinks=["a"], fsync_acks=True) as j:
        syncs = j.stats().syncs
        await j.ack("a", 3)
        assert j.cursor("a") == 3 and j.stats().syncs == syncs + 1


async def test_a_caught_up_read_needs_no_database_read(tmp_path: Path):
    """Issue 17 item 6: a sink at the head of the journal reads nothing without a hop
    to the read thread; one event more and the next read goes to the database again."""
    async with Journal(tmp_path / "j", sinks=["a"]) as j:
        await j.append_many([make_event(n) for n in range(3)])
        assert [r.seq for r in await j.read("a", 10)] == [1, 2, 3]
        await j.ack("a", 3)
        reads = j._reads.reads  # type: ignore[union-attr]  # our own counter
        assert await j.read("a", 10) == []
        assert j._reads.reads == reads  # type: ignore[union-attr]
        await j.append(make_event(3))
        # One event more: read from the writer's tail of recent events (journal/tail.py),
        # still no hop to the read thread ...
        assert [r.seq for r in await j.read("a", 10)] == [4]
        assert j._reads.reads == reads  # type: ignore[union-attr]
        # ... and a read starting before the tail (a new journal handle has none) goes
        # to the database.
        j._writer.tail.clear()  # type: ignore[union-attr]  # our own tail
        await j.rewind("a", 1)
        assert [r.seq for r in await j.read("a", 10)] == [2, 3, 4]
        assert j._reads.reads == reads + 1  # type: ignore[union-attr]


async def test_reads_bounded_in_bytes_stop_before_the_event_that_would_pass(tmp_path: Path):
    """Issue 17 item 2: max_bytes counts the events' JSON size (JournalRecord.size, from
    the stored lengths without decoding) and returns at least one event."""
    async with Journal(tmp_path / "j", sinks=["a"]) as j:
        await j.append_many([make_event(n, size=1000 * (n + 1)) for n in range(4)])
        await j.append(make_event(9).with_changes(data=None))  # no data: attrs only
        every = await j.read_after(0, 100)
        sizes = [r.size for r in every]
        assert sizes == [len(make_event(n, size=1000 * (n + 1)).to_json()) for n in range(4)] + [
            len(make_event(9).with_changes(data=None).to_json())
        ]
        assert [r.seq for r in await j.read_after(0, 100, sizes[0] + sizes[1])] == [1, 2]
        assert [r.seq for r in await j.read_after(0, 100, sizes[0] + sizes[1] - 1)] == [1]
        assert [r.seq for r in await j.read_after(2, 100, 1)] == [3]  # one, however large
        assert [r.seq for r in await j.read("a", 2, 10**9)] == [1, 2]  # the count still caps
        assert [r.seq for r in await j.read_after(3, 100, sum(sizes))] == [4, 5]


async def test_read_after_the_newest_seq_needs_no_read_thread(tmp_path: Path):
    """A sink worker that acks in the background reads on from what it delivered: at
    the newest seq, nothing is committed after it, and no read hops to the thread."""
    async with Journal(tmp_path / "j", sinks=["a"]) as j:
        await j.append_many([make_event(n) for n in range(3)])
        log = j.log
        reads = log._reads
        hops: list[object] = []

        class CountingReads:
            async def run(self, fn: Any) -> Any:
                hops.append(fn)
                return await reads.run(fn)

        log._reads = CountingReads()  # type: ignore[assignment]
        assert await j.read_after(3, 10) == [] and await j.read_after(9, 10) == []
        assert hops == []
        assert [r.seq for r in await j.read_after(1, 10)] == [2, 3]


async def test_a_resume_point_commits_in_the_group_of_the_events_it_follows(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["a"]) as j:
        items = [encoded(make_event(n)) for n in range(3)]
        before = j.stats().commits
        statuses = await j.append_encoded(items, state=("run:last_id", "3"))
        assert statuses == [AppendStatus.APPENDED] * 3
        assert j.stats().commits == before + 1  # one group: the events and the point
        # Known already (duplicates): still journaled, so the point moves on.
        assert await j.append_encoded(items[2:], state=("run:last_id", "3b")) == [
            AppendStatus.DUPLICATE
        ]
        # No events: the point alone.
        assert await j.append_encoded([], state=("other", "x")) == []
    async with Journal(tmp_path / "j.db", sinks=["a"]) as j:
        assert await j.get_state("run:last_id") == "3b"
        assert await j.get_state("other") == "x"
        assert j.last_seq == 3


def test_a_resume_point_is_skipped_unless_every_event_before_it_was_journaled(tmp_path: Path):
    from argbridge.journal.ops import Append, Mirror, SetStateAfter
    from argbridge.journal.store import Txn

    db = engine.open_db(tmp_path / "j.db")
    try:
        ok, failed, withdrawn = (Append(*encoded(make_event(n))) for n in range(3))
        ok.result = AppendStatus.APPENDED
        failed.error = JournalError("journal commit failed: disk full")
        cases = [((ok,), True), ((ok, failed), False), ((ok, withdrawn), False)]
        for after, written in cases:
            work = Work(Txn(db), Mirror(), 1.0, {})
            assert SetStateAfter("k", "v", after).apply(work) is written
            assert (store.state_key("k") in work.txn.overlay) is written
    finally:
        db.close()


async def test_compression_none_writes_raw_tables_and_either_setting_reads_the_other(
    tmp_path: Path,
):
    def table_bytes(path: Path) -> int:
        return sum(f.stat().st_size for f in path.glob("*.ldb"))

    sizes = {}
    settings: tuple[store.Compression, ...] = ("none", "snappy")
    for compression in settings:
        path = tmp_path / compression
        for _ in range(2):  # the reopen writes the log's events into a level-0 table
            async with Journal(path, sinks=["a"], compression=compression) as j:
                if not j.last_seq:
                    await j.append_many([make_event(n, size=1000) for n in range(2000)])
        sizes[compression] = table_bytes(path)
        [other] = [c for c in settings if c != compression]
        async with Journal(path, sinks=["a"], compression=other) as j:
            records = await j.read("a", 5000)
            assert [r.event for r in records] == [make_event(n, size=1000) for n in range(2000)]
    # The pads compress well: raw tables are several times larger.
    assert sizes["none"] > 3 * sizes["snappy"] > 0, sizes
