"""A sink worker's background acks (sinks/acker.py), against a real journal: seqs handed
over while one ack commits are coalesced, a rewind that made an ack stale is reported,
and a failure reaches the worker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from argbridge.errors import JournalClosed
from argbridge.journal import Journal
from argbridge.journal.roles import SinkJournalOverlay
from argbridge.sinks.acker import Acker
from tests.conftest import make_event


class GatedAcks(SinkJournalOverlay):
    """The real journal, whose acks wait for ``gate`` and are recorded."""

    def __init__(self, inner: Journal) -> None:
        super().__init__(inner)
        self.gate = anyio.Event()
        self.acks: list[tuple[int, bool]] = []
        self.waiting = anyio.Event()

    async def ack(self, sink: str, seq: int, *, behind: bool = False) -> None:
        self.acks.append((seq, behind))
        self.waiting.set()
        await self.gate.wait()
        await self.inner.ack(sink, seq, behind=behind)


@contextlib.asynccontextmanager
async def acking(tmp_path: Path) -> AsyncIterator[tuple[Journal, GatedAcks, Acker]]:
    """Five events read by sink ``s`` (the read's epoch), and an acker running through
    :class:`GatedAcks`."""
    async with Journal(tmp_path / "j", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(5)])
        assert len(await journal.read("s", 10)) == 5
        gated = GatedAcks(journal)
        acker = Acker(gated, "s")
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.run)
            yield journal, gated, acker
            tg.cancel_scope.cancel()


async def test_seqs_handed_over_while_one_commits_are_coalesced(tmp_path: Path):
    async with acking(tmp_path) as (journal, gated, acker):
        acker.ack(1)
        await gated.waiting.wait()
        acker.ack(2)
        acker.ack(4)  # while 1 commits: only the newest is acked next
        assert not acker.settled and journal.cursor("s") == 0
        gated.gate.set()
        with anyio.fail_after(5):
            await acker.settle()
        assert gated.acks == [(1, True), (4, True)] and journal.cursor("s") == 4
        assert acker.settled and not acker.rewound


async def test_a_stale_ack_is_reported_and_the_seq_not_handed_over_yet_forgotten(
    tmp_path: Path,
):
    """An ack a rewind made stale sets ``rewound``. The worker then hands over a batch
    it read before the rewind, restarts the acker and reads from the cursor, which
    records the new epoch. That seq is never acked: carrying the new epoch it would
    move the cursor past the replay."""
    async with acking(tmp_path) as (journal, gated, acker):
        acker.ack(2)
        await gated.waiting.wait()
        await journal.rewind("s", 0)  # a replay while that ack was on its way
        gated.gate.set()
        with anyio.fail_after(5):
            await acker.settle()
        assert acker.rewound and journal.cursor("s") == 0
        acker.ack(5)  # delivered from before the rewind
        acker.restart()  # the worker's next loop, before any await
        assert len(await journal.read("s", 10)) == 5  # from the cursor: new epoch
        with anyio.fail_after(5):
            await acker.settle()
        assert [seq for seq, _ in gated.acks] == [2]
        assert journal.cursor("s") == 0 and not acker.rewound


async def test_a_failed_ack_reaches_the_worker(tmp_path: Path):
    journal = Journal(tmp_path / "j", sinks=["s"])
    async with journal:
        await journal.append(make_event(0))
    acker = Acker(journal, "s")  # closed: its ack fails
    async with anyio.create_task_group() as tg:
        tg.start_soon(acker.run)
        acker.ack(1)
        with anyio.fail_after(5), pytest.raises(JournalClosed):
            await acker.settle()
        with pytest.raises(JournalClosed):
            acker.ack(1)
        await acker.wait_settled()  # never raises
        tg.cancel_scope.cancel()
