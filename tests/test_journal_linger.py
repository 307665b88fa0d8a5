"""The writer's group linger (``journal.group_linger``, issue 17 item 6): under live
traffic a small group with appends waits for more before its one sync; a lone append,
a group of acks only and a group a backlog fills commit at once."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc

from argbridge.journal import AppendStatus, Journal
from argbridge.journal.writer import FRUITLESS_LINGERS, LINGER_BELOW, LINGER_WINDOW
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


async def test_a_sequential_appender_stops_lingering_until_appends_overlap(tmp_path: Path):
    """A closed loop (each append waits for the previous one's answer) cannot add to the
    group its own append waits for: after FRUITLESS_LINGERS lingers that gathered
    nothing, a lone append commits at once; two appends queued together linger again."""
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))  # quiet: at once
        for n in range(1, 1 + FRUITLESS_LINGERS):
            done: list[AppendStatus] = []
            async with anyio.create_task_group() as tg:
                await _appending(j, tg, range(n, n + 1), done)
                await clock.wait_sleeping()
                clock.advance(LINGER)  # nothing else came
            assert done == [AppendStatus.APPENDED]
        assert clock.sleeps == [LINGER] * FRUITLESS_LINGERS
        # Live traffic still (within the window), but the lingers gathered nothing.
        for n in range(1 + FRUITLESS_LINGERS, 4 + FRUITLESS_LINGERS):
            assert await j.append(make_event(n)) is AppendStatus.APPENDED
        assert clock.sleeps == [LINGER] * FRUITLESS_LINGERS
        # Two appends queued together: concurrent appenders, the leader lingers again.
        done = []
        first = 4 + FRUITLESS_LINGERS
        async with anyio.create_task_group() as tg:
            await _appending(j, tg, range(first, first + 2), done)
            await clock.wait_sleeping()
            assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 1)
            clock.advance(LINGER)
        assert done == [AppendStatus.APPENDED] * 2
        assert j.last_seq == first + 2


async def test_a_linger_that_gathers_keeps_the_next_lone_append_lingering(tmp_path: Path):
    clock = ManualClock()
    async with Journal(tmp_path / "j", sinks=["a"], group_linger=LINGER, clock=clock) as j:
        await j.append(make_event(0))
        for round_ in range(FRUITLESS_LINGERS + 1):
            done: list[AppendStatus] = []
            first = 1 + 2 * round_
            async with anyio.create_task_group() as tg:
                await _appending(j, tg, range(first, first + 1), done)
                await clock.wait_sleeping()
                await _appending(j, tg, range(first + 1, first + 2), done)  # gathered
                clock.advance(LINGER)
            assert done == [AppendStatus.APPENDED] * 2
        assert clock.sleeps == [LINGER] * (FRUITLESS_LINGERS + 1)
