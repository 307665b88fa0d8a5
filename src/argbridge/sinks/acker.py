"""A sink worker's cursor acks, committed in the background and coalesced.

A worker that waited for each ack before reading on read its next batch only once the
journal had committed the ack: with ``journal.group_linger`` (20 ms by default) the ack
rides the next group of appends, so live traffic waited that long at every batch. At
the soak's load (200 streaming runs + 200 webhooks a second, bench_bounds --phase
mixed) commit -> Kafka ack was p50 18-19 ms, p90 25-37 ms, p99 ~48 ms, and only 80-92%
of events were acked within 25 ms.

:class:`Acker` takes the newest delivered seq (:meth:`Acker.ack`, no wait) and commits
it from its own task (:meth:`Acker.run`, ``Ack.behind``); seqs handed over while one
commits are coalesced into the next ack (the cursor moves forward only, so the newest
one says it all). The worker reads on after its delivered position meanwhile.
:meth:`Acker.settle` waits until the newest seq is committed: before a pipelined drain
(which acks in order itself), and at stop. A worker that caught up waits for new events
*or* the commit, whichever comes first (``on_settled`` pokes it), and goes idle only
once the cursor is where it delivered to. An ack the
journal ignored because a rewind made it stale leaves the cursor elsewhere:
:attr:`Acker.rewound` tells the worker to read again from the cursor. A crash loses at
most the acks not committed yet: those events are delivered again (at-least-once, as
the journal promises; the duplicates are bounded by what one group linger delivers).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from argbridge.journal.roles import SinkJournal


class Acker:
    """Background, coalesced cursor acks for one sink (see the module docstring)."""

    def __init__(
        self, journal: SinkJournal, sink: str, on_settled: Callable[[], None] | None = None
    ) -> None:
        self._journal = journal
        self._sink = sink
        #: Called each time every seq handed over is committed (or failed): a worker
        #: waiting for new events meanwhile reads again from the cursor.
        self._on_settled = on_settled
        #: The newest delivered seq not committed yet.
        self._target: int | None = None
        self._wanted = anyio.Event()
        self._settled = anyio.Event()
        self._settled.set()
        self.error: Exception | None = None
        #: An ack was ignored (a rewind made it stale): read again from the cursor.
        self.rewound = False

    @property
    def settled(self) -> bool:
        """Whether every seq handed over is committed (or failed)."""
        return self._settled.is_set()

    def ack(self, seq: int) -> None:
        """Commit ``seq`` as the cursor, in the background."""
        if self.error is not None:
            raise self.error
        self._target = seq
        if self._settled.is_set():
            self._settled = anyio.Event()
        self._wanted.set()

    def restart(self) -> None:
        """After :attr:`rewound`: forget the seq not handed to the journal yet. It came
        from a batch read before the rewind, and the worker's next read from the cursor
        records the new epoch, which that ack, handed over after it, would carry: the
        cursor would jump past the replay."""
        self.rewound = False
        self._target = None

    async def settle(self) -> None:
        """Return once every seq handed over is committed; raise what failed."""
        await self._settled.wait()
        if self.error is not None:
            raise self.error

    async def wait_settled(self) -> None:
        """:meth:`settle` that never raises (a worker stopping on another error)."""
        await self._settled.wait()

    async def run(self) -> None:
        """The acking task (in the worker's task group, cancelled when it ends)."""
        journal, sink = self._journal, self._sink
        while True:
            await self._wanted.wait()
            self._wanted = anyio.Event()
            while (seq := self._target) is not None:
                try:
                    await journal.ack(sink, seq, behind=True)
                except Exception as exc:  # raised in the worker (settle, ack)
                    self.error = exc
                    self._target = None
                    self._set_settled()
                    return
                if journal.cursor(sink) != seq:
                    self.rewound = True
                if self._target == seq:
                    self._target = None
            self._set_settled()

    def _set_settled(self) -> None:
        self._settled.set()
        if self._on_settled is not None:
            self._on_settled()
