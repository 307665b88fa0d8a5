"""The reader → committer pipeline: its byte bound covers the batch being committed."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from argbridge.journal import AppendStatus, EncodedEvent
from argbridge.journal.records import body_size, encode_event, encoded
from argbridge.sources.pipeline import CommitPipeline
from tests.conftest import make_event

pytestmark = pytest.mark.timeout(10)


class HeldCommits:
    """The pipeline's view of a source context: each commit waits until released."""

    def __init__(self) -> None:
        self.committed: list[list[str]] = []
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.states: list[tuple[str, str]] = []
        #: The journal a source context holds (a resume point kept there rides along).
        self.journal = self

    async def emit_encoded(
        self, items: Sequence[EncodedEvent], *, state: tuple[str, str] | None = None
    ) -> list[AppendStatus]:
        self.started.set()
        await self.release.wait()
        self.committed.append([item.id for item in items])
        if state is not None:
            self.states.append(state)
        return [AppendStatus.APPENDED] * len(items)


async def test_the_batch_being_committed_counts_against_the_bound():
    ctx = HeldCommits()
    pipe = CommitPipeline(ctx, max_bytes=100)  # type: ignore[arg-type]
    first, second = encoded(make_event(1)), encoded(make_event(2))
    put_second = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipe.run)
        await pipe.put([first], size=60)
        await ctx.started.wait()  # the committer holds the first batch, uncommitted

        async def reader() -> None:
            await pipe.put([second], size=60)
            put_second.set()

        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        # 60 bytes being committed + 60 more would pass 100: the reader waits.
        assert not put_second.is_set()
        assert pipe.queued_bytes == 60
        ctx.release.set()
        await put_second.wait()
        pipe.close()
    assert ctx.committed == [[first.id], [second.id]]
    assert pipe.committed == 2
    assert pipe.queued_bytes == 0


def test_an_encoded_event_is_stored_as_the_journal_encodes_it():
    event = make_event(7)
    item = encoded(event)
    attrs, data = encode_event(event)
    assert (item.id, item.body, item.split) == (event.id, attrs + data, len(attrs))
    assert item.size == body_size(attrs, data)


class LastId:
    """A stream's resume point, kept in ``store``."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.last = ""
        self.separate: list[tuple[str, str]] = []

    def state_for(self, marker: str) -> tuple[str, str] | None:
        return None if marker == self.last else ("last_id", marker)

    def committed(self, marker: str) -> None:
        self.last = marker

    async def set_state(self, key: str, value: str) -> None:
        self.separate.append((key, value))


@pytest.mark.parametrize("kept_in_the_journal", [True, False])
async def test_the_resume_point_goes_with_its_batch_or_after_it(kept_in_the_journal: bool):
    ctx = HeldCommits()
    ctx.release.set()
    resume = LastId(None)
    resume.store = ctx if kept_in_the_journal else resume  # else: a lease keeps it
    pipe = CommitPipeline(ctx, resume)  # type: ignore[arg-type]
    first, second = encoded(make_event(1)), encoded(make_event(2))
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipe.run)
        for events, marker in (
            ([first], "id-1"),
            ([], "id-1"),  # the same point: nothing to write
            ([second], None),  # no point with it
            ([], "id-2"),  # a point alone
        ):
            if marker is None:
                await pipe.put(events, size=10)
            else:
                await pipe.put(events, marker, size=10)
            await anyio.wait_all_tasks_blocked()  # committed before the next one
        pipe.close()
    # A batch goes to the journal with its point, or alone; a point alone too (kept in
    # the journal: as an empty batch with the point), never an empty batch without one.
    batches = [[first.id], [second.id]] + ([[]] if kept_in_the_journal else [])
    assert ctx.committed == batches
    written = [("last_id", "id-1"), ("last_id", "id-2")]
    expected = (written, []) if kept_in_the_journal else ([], written)
    assert (ctx.states, resume.separate) == expected
    assert resume.last == "id-2"
