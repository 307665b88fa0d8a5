"""Backpressure: the soft cap pauses intake, the hard bound is never crossed (issue 17)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from argbridge.errors import JournalError
from argbridge.journal import AppendStatus, Journal
from argbridge.journal.backpressure import IntakePaused, PauseSignal, hard_bound
from tests.conftest import make_event


def test_hard_bound_is_the_cap_plus_the_larger_of_20_percent_and_the_minimum():
    assert hard_bound(5000, 1000) == 6000
    assert hard_bound(100_000, 1000) == 120_000
    assert hard_bound(10, 1000) == 1010
    signal = PauseSignal(5000, 1000 * 1024 * 1024)
    assert (signal.hard_events, signal.hard_bytes) == (6000, 1200 * 1024 * 1024)
    assert PauseSignal(10, 1024).hard_bytes == 1024 + 1024 * 1024


async def test_admission_takes_what_fits_and_waits_for_the_rest():
    signal = PauseSignal(10, 10_000, min_slack_events=2, min_slack_bytes=0)
    assert signal.hard_events == 12
    signal.update(10, 100)
    assert signal.is_paused
    assert await signal.admit([10, 10, 10]) == (2, 20)  # room for 2 of 3
    with pytest.raises(IntakePaused):
        await signal.admit([10], wait=False)
    got: list[tuple[int, int]] = []

    async def waiter() -> None:
        got.append(await signal.admit([10, 10]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        signal.release(2, 20)  # committed: the backlog now holds them
        signal.update(12, 120)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        signal.update(11, 110)  # a sink acknowledged one
    assert got == [(1, 10)]


async def test_bytes_bound_and_one_oversized_event_alone():
    signal = PauseSignal(100, 1000, min_slack_events=10, min_slack_bytes=100)
    assert signal.hard_bytes == 1200
    signal.update(1, 900)
    assert await signal.admit([200, 200]) == (1, 200)  # 900 + 200 <= 1200, +400 is not
    signal.release(1, 200)
    signal.update(2, 1100)
    with pytest.raises(IntakePaused):
        await signal.admit([5000], wait=False)  # no room, and over the cap
    signal.update(0, 0)
    # Larger than the whole byte bound: admitted alone while nothing else is in flight.
    assert await signal.admit([5000]) == (1, 5000)
    with pytest.raises(IntakePaused):
        await signal.admit([1], wait=False)


def test_try_admit_takes_one_event_only_where_admit_would_at_once():
    signal = PauseSignal(10, 1000, min_slack_events=2, min_slack_bytes=100)
    assert (signal.hard_events, signal.hard_bytes) == (12, 1200)
    signal.update(10, 1000)  # paused, at the soft caps: the slack is left
    assert signal.try_admit(120)
    assert not signal.try_admit(120)  # 1000 + 120 + 120 > 1200 bytes
    assert signal.try_admit(80)  # exactly 1200
    assert not signal.try_admit(0)  # 10 + 2 in flight: the hard bound of 12 events
    assert signal.in_flight == (2, 200)
    signal.release(1, 120)
    signal.release(1, 80)
    signal.update(0, 0)
    # One event larger than the byte bound: only admit takes it (alone, not paused).
    assert not signal.try_admit(5000)
    signal.hold("disk_full")
    assert not signal.try_admit(1)
    signal.release_hold("disk_full")
    assert signal.try_admit(1)


async def test_a_hold_pauses_and_blocks_admission_until_released():
    signal = PauseSignal(100, 10_000)
    signal.hold("disk_full", "no space left on device")
    assert signal.is_paused and signal.reason == "disk_full"
    with pytest.raises(IntakePaused, match="disk_full"):
        await signal.admit([1], wait=False)
    resumed = anyio.Event()

    async def reader() -> None:
        await signal.wait_resumed()
        assert await signal.admit([1]) == (1, 1)
        resumed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert not resumed.is_set()
        signal.release_hold("disk_full")
    assert resumed.is_set() and not signal.is_paused


async def test_concurrent_appenders_never_cross_the_hard_bound(tmp_path: Path):
    """40 producers, each appending batches of 250 as fast as the journal commits,
    against a sink that acknowledges nothing: the backlog stops at the hard bound (the
    unbounded path before: every batch was committed whole, whatever the backlog)."""
    cap = 100
    async with Journal(tmp_path / "j.db", sinks=["stopped"], max_backlog_events=cap) as j:
        bound = j.pause.hard_events
        assert bound == cap + 1000
        done = 0

        async def producer(p: int) -> None:
            nonlocal done
            for b in range(4):
                batch = [make_event(p * 10_000 + b * 1000 + i) for i in range(250)]
                statuses = await j.append_many(batch)
                assert statuses == [AppendStatus.APPENDED] * 250
            done += 1

        async with anyio.create_task_group() as tg:
            for p in range(40):
                tg.start_soon(producer, p)
            with anyio.fail_after(30):
                while j.backlog("stopped") < bound:
                    await j.wait_for_events(j.last_seq)
            await anyio.wait_all_tasks_blocked()
            assert j.backlog("stopped") == bound  # full, and not one more
            assert j.pause.is_paused and done == 0
            # Drain in steps: intake resumes and stays bounded until everything is in.
            with anyio.fail_after(30):
                while j.last_seq < 40 * 4 * 250:
                    seq = j.last_seq
                    await j.ack("stopped", seq)
                    await j.wait_for_events(seq)
                    assert j.backlog("stopped") <= bound
            assert j.pause.peak_events == bound
        assert j.last_seq == 40 * 4 * 250


async def test_append_without_waiting_fails_fast_at_the_bound(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["a"]) as j:
        j.pause.hold("disk_full", "test")
        with pytest.raises(IntakePaused):
            await j.append(make_event(1), wait=False)
        assert j.last_seq == 0
        j.pause.release_hold("disk_full")
        assert await j.append(make_event(1), wait=False) is AppendStatus.APPENDED


async def test_closing_wakes_blocked_appenders(tmp_path: Path):
    j = Journal(tmp_path / "j.db", sinks=["a"], max_backlog_events=1)
    await j.__aenter__()
    await j.append_many([make_event(n) for n in range(j.pause.hard_events)])
    failed = anyio.Event()

    async def blocked() -> None:
        with pytest.raises(JournalError):
            await j.append(make_event(99_999))
        failed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked)
        await anyio.wait_all_tasks_blocked()
        await j.aclose()
    assert failed.is_set()
