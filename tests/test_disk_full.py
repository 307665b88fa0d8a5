"""Disk full (issue 17 item 7) on a small filesystem of the test's own: intake pauses
(stream readers wait, webhooks get 503), nothing on disk is corrupted, the daemon says
why (log, readiness), and everything resumes when space returns. Time: a manual clock.

"Not corrupted" is checked by reopening the LevelDB journal with ``paranoid_checks`` and
reading every key with its checksum verified, and by reading back every accepted event
after a reopen (LevelDB's log recovery: a write to a log left broken by a failed write
would be dropped there; see argbridge.journal.writer)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import anyio
import plyvel
import pytest

from argbridge.errors import JournalError
from argbridge.journal import AppendStatus, Journal, engine, store
from argbridge.journal.backpressure import IntakePaused
from tests.conftest import make_event
from tests.support.manual_clock import ManualClock
from tests.support.small_fs import fill, small_filesystem


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path, 4096) as (mnt, how):
        if mnt is None:
            pytest.skip(how)
        yield mnt


def integrity(path: Path) -> str:
    """``ok`` when LevelDB opens both of the journal's databases (the log, the index)
    with paranoid checks and every key reads back with its checksum verified (else
    plyvel raises)."""
    for where in (path, path / engine.IDS_DIR):
        db = plyvel.DB(str(where), paranoid_checks=True)
        try:
            with db.iterator(verify_checksums=True) as it:
                for _ in it:
                    pass
        finally:
            db.close()
    return "ok"


async def test_a_full_disk_holds_intake_loses_nothing_and_resumes(small_fs: Path):
    clock = ManualClock()
    path = small_fs / "state" / "journal"
    async with Journal(path, sinks=["a"], clock=clock) as journal:
        assert (
            await journal.append_many([make_event(n) for n in range(10)])
            == [AppendStatus.APPENDED] * 10
        )
        filler = fill(small_fs)
        statuses: list[AppendStatus] = []
        batch = [make_event(100 + n, size=2000) for n in range(200)]

        async def stream_committer() -> None:
            statuses.extend(await journal.append_many(batch))

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream_committer)
            with anyio.fail_after(10):
                await clock.wait_sleeping()  # the failed group waits for space
            assert journal.pause.is_paused and journal.pause.reason == "disk_full"
            assert "no space left" in journal.pause.holds["disk_full"]
            assert journal.last_seq == 10 and statuses == []
            with pytest.raises(IntakePaused, match="disk_full"):
                await journal.append(make_event(999), wait=False)  # a webhook: 503
            # Still full at the next retry: the group keeps waiting, a little longer.
            clock.advance(clock.pending[0])
            with anyio.fail_after(10):
                await clock.wait_sleeping()
            assert clock.sleeps[-1] > clock.sleeps[0]
            # The retry's reopen of the database found no room either (LevelDB writes
            # its memtable out on recovery): reads are refused until a reopen succeeds.
            with pytest.raises(JournalError, match="unavailable"):
                await journal.read("a", 10)
            assert journal.pause.reason == "disk_full" and statuses == []
            filler.unlink()  # space returns
            clock.advance(clock.pending[0])
        assert statuses == [AppendStatus.APPENDED] * 200
        assert not journal.pause.is_paused
        assert journal.last_seq == 210
        expected = [e.id for e in [*(make_event(n) for n in range(10)), *batch]]
        assert [r.event.id for r in await journal.read("a", 1000)] == expected
        # Written after the failed write, on a reopened database: still there after
        # LevelDB recovers its log.
        await journal.append(make_event(5000))
    async with Journal(path, sinks=["a"], clock=clock) as journal:
        ids = [r.event.id for r in await journal.read("a", 1000)]
        assert ids == [*expected, make_event(5000).id]
    assert integrity(path) == "ok"


async def test_the_hold_is_released_when_space_returns_with_nothing_queued(small_fs: Path):
    clock = ManualClock()
    path = small_fs / "journal"
    async with Journal(path, sinks=["a"], clock=clock) as journal:
        filler = fill(small_fs)

        async def webhook_like() -> None:
            await journal.append_many([make_event(n, size=2000) for n in range(100)])

        async with anyio.create_task_group() as tg:
            tg.start_soon(webhook_like)
            with anyio.fail_after(10):
                await clock.wait_sleeping()
            tg.cancel_scope.cancel()  # the caller gave up: nothing left queued
        assert journal.pause.reason == "disk_full" and journal.last_seq == 0
        assert not await journal.recheck_space()  # still full
        filler.unlink()
        assert await journal.recheck_space()
        assert not journal.pause.is_paused
        assert await journal.read("a", 10) == []  # reopened, before any new write
        assert await journal.append(make_event(1)) is AppendStatus.APPENDED
    assert integrity(path) == "ok"


async def test_a_webhook_append_fails_fast_when_its_commit_finds_the_disk_full(small_fs: Path):
    clock = ManualClock()
    async with Journal(small_fs / "journal", sinks=["a"], clock=clock) as journal:
        filler = fill(small_fs)
        with pytest.raises(IntakePaused, match="disk_full"):
            await journal.append(make_event(1, size=60_000), wait=False)
        assert journal.pause.reason == "disk_full" and journal.last_seq == 0
        filler.unlink()
        assert await journal.recheck_space()
        assert await journal.append(make_event(1), wait=False) is AppendStatus.APPENDED


async def test_the_daemon_answers_503_says_why_and_resumes(small_fs: Path, tmp_path: Path):
    """The whole daemon with its state dir on the small filesystem: webhooks get 503 +
    Retry-After while the disk is full, /readyz says why, and intake resumes by itself
    once space returns (the runtime rechecks every second)."""
    from tests.support.webhooks import incident_body, running_app, sw_headers, webhook_settings

    out = tmp_path / "out"  # the file sink writes elsewhere: only the journal is short
    out.mkdir()
    s = webhook_settings(
        small_fs,
        sinks={"file": {"type": "file", "path": str(out / "events.jsonl")}},
        routes=[{"sinks": ["file"]}],
    )
    async with running_app(s) as r:
        body = incident_body("INC-1")
        assert (await r.post("argus", body, sw_headers(body))).status_code == 200
        filler = fill(small_fs)
        big = incident_body("INC-2", pad=200_000)  # more than the log's last page holds
        resp = await r.post("argus", big, sw_headers(big))
        assert resp.status_code == 503 and resp.headers["retry-after"]
        body3 = incident_body("INC-3")
        resp = await r.post("argus", body3, sw_headers(body3))
        assert resp.status_code == 503  # paused: refused before reading the body
        ready = (await r.client.get(f"{r.base}/readyz")).json()
        assert "journal" in ready["not_ready"]
        assert "disk full" in ready["components"]["journal"]["detail"]
        filler.unlink()
        with anyio.fail_after(10):
            await r.app.journal.pause.wait_resumed()
        for b in (big, body3):
            assert (await r.post("argus", b, sw_headers(b))).status_code == 200
        assert r.app.journal.last_seq == 3
    assert integrity(small_fs / "state" / "journal") == "ok"


async def test_a_failed_write_that_landed_is_taken_as_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A write can report ENOSPC after its record reached the log (a failed sync on a
    real disk). The retry reopens the database, finds the group's token (m:group) and
    takes the group as committed: no event twice, every appender told APPENDED. The
    fault is injected in our own transaction (the real write runs, then it raises)."""
    clock = ManualClock()
    path = tmp_path / "journal"
    real_write = store.Txn.write
    failures = [OSError(errno.ENOSPC, "No space left on device (sync)")]

    def write_then_fail(txn: store.Txn) -> None:
        real_write(txn)
        if failures:
            raise failures.pop()

    async with Journal(path, sinks=["a"], clock=clock) as journal:
        monkeypatch.setattr(store.Txn, "write", write_then_fail)
        statuses: list[AppendStatus] = []

        async def appender() -> None:
            statuses.extend(await journal.append_many([make_event(n) for n in range(5)]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(appender)
            with anyio.fail_after(10):
                await clock.wait_sleeping()
            assert journal.pause.reason == "disk_full" and journal.last_seq == 0
            clock.advance(clock.pending[0])
        assert statuses == [AppendStatus.APPENDED] * 5
        assert journal.last_seq == 5 and not journal.pause.is_paused
        assert await journal.append(make_event(5)) is AppendStatus.APPENDED
    async with Journal(path, sinks=["a"], clock=clock) as journal:
        records = await journal.read("a", 100)
        assert [r.event.id for r in records] == [make_event(n).id for n in range(6)]
        assert [r.seq for r in records] == list(range(1, 7))


async def test_webhooks_whose_ops_shared_the_failed_group_get_503_not_a_hang(small_fs: Path):
    """Several webhook requests (append wait=False) in one group that finds the disk
    full: every one of them answers at once (IntakePaused), the leader and the others."""
    clock = ManualClock()
    async with Journal(small_fs / "journal", sinks=["a"], clock=clock) as journal:
        filler = fill(small_fs)
        outcomes: list[str] = []

        async def webhook(n: int) -> None:
            try:
                await journal.append(make_event(n, size=60_000), wait=False)
            except IntakePaused:
                outcomes.append("503")
            else:
                outcomes.append("200")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n in range(5):
                    tg.start_soon(webhook, n)
        assert outcomes == ["503"] * 5 and journal.last_seq == 0
        filler.unlink()
        assert await journal.recheck_space()
        assert await journal.append(make_event(1), wait=False) is AppendStatus.APPENDED
    assert integrity(small_fs / "journal") == "ok"


async def test_closing_while_held_fails_the_waiting_appends_and_hangs_nothing(small_fs: Path):
    """Shutdown with the disk still full: the queued group is tried once more, then its
    appenders get a JournalError (not accepted: a stream keeps its resume point)."""
    clock = ManualClock()
    path = small_fs / "journal"
    journal = Journal(path, sinks=["a"], clock=clock)
    await journal.__aenter__()
    await journal.append(make_event(0))
    filler = fill(small_fs)
    failed = anyio.Event()

    async def stream_committer() -> None:
        with pytest.raises(JournalError):
            await journal.append_many([make_event(n, size=2000) for n in range(1, 100)])
        failed.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream_committer)
            await clock.wait_sleeping()
            await journal.aclose()
    assert failed.is_set()
    filler.unlink()
    async with Journal(path, sinks=["a"], clock=clock) as journal:
        assert [r.event.id for r in await journal.read("a", 10)] == [make_event(0).id]
    assert integrity(path) == "ok"
