"""One dedicated thread that runs the journal's blocking LevelDB calls, in order.

The writer's group commits (a synced write batch: ``fdatasync``) and the roles' reads
run off the event loop. ``anyio.to_thread.run_sync`` did that at a cost per call that
the journal pays once per group commit, i.e. once per webhook at a few hundred a second:
measured with uvloop, one call every 2.5 ms to an idle thread, 105–140 µs of CPU per
round trip through anyio's worker thread (its queue's Python ``Condition``, its cancel
scope and limiter), 80–110 µs through a ``ThreadPoolExecutor``, 31–35 µs through this
thread (a C ``SimpleQueue`` and ``call_soon_threadsafe``). Hand-written because that
hop is the whole point: no library offers a cheaper one.

Semantics are those of ``anyio.to_thread.run_sync`` without ``abandon_on_cancel``: a
call, once queued, runs to its end, and its caller waits for it and gets its outcome; a
cancellation lands at the caller's next checkpoint. Calls run one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

R = TypeVar("R")

#: What the thread calls back on the event loop with: ``(result, error)``.
Done = Callable[[Any, BaseException | None], None]
_Item = tuple[Callable[[], Any], Done, asyncio.AbstractEventLoop]


def _resolver(fut: asyncio.Future[Any]) -> Done:
    def resolve(result: Any, error: BaseException | None) -> None:
        if fut.done():  # never: the waiter is shielded; kept so a late result cannot raise
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    return resolve


class JournalThread:
    """Runs blocking calls in one thread of its own (started on first use)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Calls run so far.
        self.calls = 0

    async def run(self, fn: Callable[[], R]) -> R:
        """``fn()`` in the thread; its result or its exception here."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.start(fn, _resolver(fut))
        with anyio.CancelScope(shield=True):
            result = await fut
        return result

    def start(self, fn: Callable[[], Any], done: Done) -> None:
        """Queue ``fn()`` for the thread without waiting for it: ``done(result, error)``
        is called on this event loop when it has run (the writer's pipelined commits,
        whose outcome no one task waits for)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()
        self.calls += 1
        self._queue.put((fn, done, asyncio.get_running_loop()))

    def close(self) -> None:
        """Let the thread end once the calls queued before this one ran."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _main(self) -> None:
        get = self._queue.get
        while (item := get()) is not None:
            fn, done, loop = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(done, result, error)
            del item, fn, done, loop, result, error
