"""The group-commit writer's waking: waiters resumed in slices, groups kept whole."""

from __future__ import annotations

import asyncio

import anyio

from argbridge.journal import Journal
from argbridge.journal.writer import WAKE_SLICE
from tests.conftest import make_event

APPENDERS = 64


async def test_waiters_resume_in_slices_and_a_callback_in_between_runs_after_one(
    journal: Journal,
) -> None:
    """After a group commit, a callback that becomes ready while the waiters are being
    woken (as a timer that expires then does) runs after one slice of them, not after
    all 64; and the next group still gathers every appender's next event."""
    writer = journal._writer
    assert writer is not None
    loop = asyncio.get_running_loop()
    resumed = 0
    seen: list[int] = []  # appenders resumed when the in-between callback ran, per commit
    on_commit = writer.on_commit

    def commit_hook() -> None:
        on_commit()
        # Runs on the next loop iteration, beside the first slice; what it queues then
        # is ready behind that slice only.
        loop.call_soon(loop.call_soon, lambda: seen.append(resumed))

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
    # The leader resumes in the commit's own step; then one slice of the others.
    assert seen[0] == 1 + WAKE_SLICE, seen
    assert seen[1] == APPENDERS + 1 + WAKE_SLICE, seen
    # Two groups of 64: the second leader waited for the last slice before gathering.
    stats = journal.stats()
    assert (stats.commits, stats.appended) == (2, 2 * APPENDERS)
