"""The writer's group linger (``journal.group_linger``, issue 17 item 6): under live
traffic a small group with appends waits for more before its one sync; a lone append,
a group of acks only and a group a backlog fills commit at once; a sink's background
acks wait for the next appends."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc

from argbridge.journal import AppendStatus, Journal
from argbridge.journal.linger import (
    EARLY_SHARE,
    FRUITLESS_LINGERS,
    LINGER_BELOW,
    LINGER_WINDOW,
    PROBE_INTERVAL,
)
from tests.conftest import make_event
from tests.support.manual_clock import ManualClock

LINGER = 0.002


async def _appending(
    j: Journal, tg: anyio.abc.TaskGroup, numbers: range, done: list[AppendStatus]
) -> None:
    async def one(n: int) -> None:
        done.append(await j.append(make_event(n)))

    for n in numbers:
        tg.start_soon(one, n)
    await anyio.wait_all_tasks_blocked()


async def test_appends_under_live_traffic_share_one_lingering_group(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        # A lone append in a quiet journal: committed at once, no linger.
        assert await j.append(make_event(0)) is AppendStatus.APPENDED
        assert clock.sleeps == []
        commits, syncs = j.stats().commits, j.stats().syncs
        done: list[AppendStatus] = []
        async with anyio.create_task_group() as tg:
            # The next one, right after: traffic is live, its leader lingers ...
            await _appending(j, tg, range(1, 2), done)
            await clock.wait_sleeping()
            assert clock.sleeps == [LINGER]
            # ... while more arrive; none is answered before the group's sync.
            await _appending(j, tg, range(2, 5), done)
            assert done == [] and j.last_seq == 1
            clock.advance(LINGER)
        assert done == [AppendStatus.APPENDED] * 4
        stats = j.stats()
        assert (stats.commits, stats.syncs, stats.last_seq) == (commits + 1, syncs + 1, 5)
        # Quiet again for longer than the window: the next append commits at once.
        clock.advance(LINGER_WINDOW * LINGER)
        await j.append(make_event(5))
        assert clock.sleeps == [LINGER]


async def test_acks_alone_never_linger(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append_many([make_event(n) for n in range(3)])
        await j.ack("a", 1)
        await j.ack("a", 2)
        await j.ack("a", 3)
        assert clock.sleeps == [] and j.cursor("a") == 3


async def test_acks_behind_ride_the_next_appends_under_live_traffic(tmp_path: Path):
    """A sink worker's background acks (``behind``) linger while appends arrive, so the
    next group carries them; in a quiet journal they commit at once; and their lingers
    count neither for nor against the closed-loop rule."""
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.ack("a", 0, behind=True)  # quiet: at once
        await j.append(make_event(0))
        assert clock.sleeps == []
        commits = j.stats().commits
        done: list[AppendStatus] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: j.ack("a", 1, behind=True))
            await clock.wait_sleeping()  # live traffic: the ack waits for appends ...
            assert clock.sleeps == [LINGER] and j.cursor("a") == 0
            await _appending(j, tg, range(1, 3), done)  # ... which join its group
            clock.advance(LINGER)
        assert done == [AppendStatus.APPENDED] * 2 and j.cursor("a") == 1
        assert j.stats().commits == commits + 1
        n = 3
        for _ in range(FRUITLESS_LINGERS - 1):  # fruitless: one short of the pause
            await _linger_once(j, clock, range(n, n + 1))
            n += 1
        async with anyio.create_task_group() as tg:  # an ack alone lingers; nothing comes
            tg.start_soon(lambda: j.ack("a", 2, behind=True))
            await clock.wait_sleeping()
            clock.advance(LINGER)
        assert j.cursor("a") == 2
        await _linger_once(j, clock, range(n, n + 1))  # not paused: the ack's not counted
        assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 2)
        assert await j.append(make_event(n + 1)) is AppendStatus.APPENDED  # paused now
        assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 2)


async def test_a_group_a_backlog_fills_does_not_linger(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))
        # LINGER_BELOW appends queued at once: the group is not small, no wait.
        await j.append_many([make_event(n) for n in range(1, 1 + LINGER_BELOW)])
        assert clock.sleeps == []
        assert j.last_seq == 1 + LINGER_BELOW


async def test_linger_off_by_default(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], clock=clock) as j:
        for n in range(5):
            await j.append(make_event(n))
        assert clock.sleeps == [] and j.stats().commits == 5


async def test_close_commits_what_a_lingering_group_holds(tmp_path: Path):
    """Closing the journal ends the linger: what was queued is committed, then closed."""
    clock = ManualClock()
    path = tmp_path / "j"
    done: list[AppendStatus] = []
    async with Journal(path, sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))
        async with anyio.create_task_group() as tg:
            await _appending(j, tg, range(1, 3), done)
            await clock.wait_sleeping()
            clock.advance(LINGER)
    assert done == [AppendStatus.APPENDED] * 2
    async with Journal(path, sinks=["a"]) as j:
        assert j.last_seq == 3


async def _linger_once(j: Journal, clock: ManualClock, numbers: range) -> None:
    """Queue ``numbers`` together; the leader lingers; nothing else comes; commit."""
    done: list[AppendStatus] = []
    sleeps = len(clock.sleeps)
    async with anyio.create_task_group() as tg:
        await _appending(j, tg, numbers, done)
        await clock.wait_sleeping()
        assert len(clock.sleeps) == sleeps + 1
        clock.advance(LINGER)
    assert done == [AppendStatus.APPENDED] * len(numbers)


async def _useful_linger(j: Journal, clock: ManualClock, first: int) -> None:
    """One append lingers; a second arrives late in the linger (open traffic)."""
    done: list[AppendStatus] = []
    async with anyio.create_task_group() as tg:
        await _appending(j, tg, range(first, first + 1), done)
        await clock.wait_sleeping()
        clock.advance(LINGER / 2)  # past EARLY_SHARE of it
        await _appending(j, tg, range(first + 1, first + 2), done)
        clock.advance(LINGER / 2)
    assert done == [AppendStatus.APPENDED] * 2


async def test_a_closed_loop_stops_lingering_and_a_useful_probe_resumes(tmp_path: Path):
    """Two senders that wait for each answer have both queued before the linger: it
    gathers nothing. After FRUITLESS_LINGERS such lingers the leader no longer waits,
    until a probe (at most once per PROBE_INTERVAL) sees an append arrive late."""
    assert EARLY_SHARE < 0.5
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))  # quiet: at once
        n = 1
        for _ in range(FRUITLESS_LINGERS):
            await _linger_once(j, clock, range(n, n + 2))
            n += 2
        assert clock.sleeps == [LINGER] * FRUITLESS_LINGERS
        # Paused: the same two senders commit at once, still within the window.
        for _ in range(3):
            done: list[AppendStatus] = []
            async with anyio.create_task_group() as tg:
                await _appending(j, tg, range(n, n + 2), done)
            assert done == [AppendStatus.APPENDED] * 2
            n += 2
        assert clock.sleeps == [LINGER] * FRUITLESS_LINGERS
        clock.advance(PROBE_INTERVAL)  # quiet for long: the next one commits at once
        assert await j.append(make_event(n)) is AppendStatus.APPENDED
        await _useful_linger(j, clock, n + 1)  # live: the probe, and it gathers late
        await _linger_once(j, clock, range(n + 3, n + 4))  # resumed: lingers again
        assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 2)
        assert j.last_seq == n + 4  # seq = number + 1


async def test_appends_that_arrive_early_in_the_linger_do_not_keep_it(tmp_path: Path):
    """Senders over a network re-queue right after their answer: early in the next
    linger. A linger whose appends all came in its first EARLY_SHARE is not useful."""
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))
        n = 1
        for _ in range(FRUITLESS_LINGERS):
            done: list[AppendStatus] = []
            async with anyio.create_task_group() as tg:
                await _appending(j, tg, range(n, n + 1), done)
                await clock.wait_sleeping()
                await _appending(j, tg, range(n + 1, n + 2), done)  # early: no time passed
                clock.advance(LINGER)
            assert done == [AppendStatus.APPENDED] * 2
            n += 2
        assert await j.append(make_event(n)) is AppendStatus.APPENDED  # paused: at once
        assert clock.sleeps == [LINGER] * FRUITLESS_LINGERS


async def test_a_paused_linger_probes_at_most_once_per_interval(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))
        for n in range(1, 1 + FRUITLESS_LINGERS):  # one sequential sender
            await _linger_once(j, clock, range(n, n + 1))
        n = 1 + FRUITLESS_LINGERS
        # Paused: no linger until PROBE_INTERVAL has passed since the pause began.
        for k in range(3):
            assert await j.append(make_event(n + k)) is AppendStatus.APPENDED
        assert clock.sleeps == [LINGER] * FRUITLESS_LINGERS
        clock.advance(PROBE_INTERVAL)  # quiet for long: the next one commits at once
        assert await j.append(make_event(n + 3)) is AppendStatus.APPENDED
        await _linger_once(j, clock, range(n + 4, n + 5))  # live again: the probe
        assert await j.append(make_event(n + 5)) is AppendStatus.APPENDED  # and no more
        assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 1)


async def test_a_linger_that_gathers_keeps_the_next_lone_append_lingering(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))
        for round_ in range(FRUITLESS_LINGERS + 1):
            await _useful_linger(j, clock, 1 + 2 * round_)
        assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 1)
