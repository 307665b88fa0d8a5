"""The journal's dedicated thread (journal/thread.py): results, errors, order, and a
cancelled caller that waits for its call to end and gets its outcome (as
``anyio.to_thread.run_sync`` without ``abandon_on_cancel``)."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from argbridge.journal.thread import JournalThread


async def test_results_errors_and_order():
    thread = JournalThread("test-journal-thread")
    seen: list[int] = []
    names: set[str] = set()

    def note(n: int) -> int:
        seen.append(n)
        names.add(threading.current_thread().name)
        return n * 2

    try:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(thread.run, lambda n=n: note(n))
        assert seen == list(range(20))
        assert names == {"test-journal-thread"}
        assert await thread.run(lambda: note(21)) == 42

        def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await thread.run(fail)
        assert thread.calls == 22
    finally:
        thread.close()


async def test_a_cancelled_caller_waits_for_its_call_to_end():
    thread = JournalThread("test-journal-thread")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        assert release.wait(10)
        finished.set()
        return "done"

    outcome: list[str] = []
    scope = anyio.CancelScope()

    async def caller() -> None:
        with scope:
            try:
                outcome.append(await thread.run(blocking))
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled before the end")
                raise
            outcome.append("finished" if finished.is_set() else "returned early")
            await anyio.lowlevel.checkpoint()  # the cancellation lands here
            outcome.append("not cancelled")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await anyio.to_thread.run_sync(started.wait, 10)
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert outcome == []  # still waiting for the call
            release.set()
        # The call ran to its end and the caller got its result; cancelled afterwards.
        assert outcome == ["done", "finished"]
        assert await thread.run(lambda: "next") == "next"
    finally:
        release.set()
        thread.close()


async def test_close_lets_queued_calls_run_and_a_later_call_starts_a_new_thread():
    thread = JournalThread("test-journal-thread")
    first = threading.Event()
    await thread.run(first.set)
    thread.close()
    assert first.is_set()
    assert await thread.run(lambda: threading.current_thread().name) == "test-journal-thread"
    thread.close()
