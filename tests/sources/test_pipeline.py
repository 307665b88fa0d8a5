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

    async def emit_encoded(self, items: Sequence[EncodedEvent]) -> list[AppendStatus]:
        self.started.set()
        await self.release.wait()
        self.committed.append([item.id for item in items])
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
