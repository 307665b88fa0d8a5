"""A fast server against a paused journal: the readers stop reading, TCP pushes back on
the server, and the daemon's memory stays bounded however much the server has to send.

The simulator floods ~560-byte events forever. The journal pauses after a few events
(no sink acknowledges). We then wait until the server's write has been blocked by flow
control for a while and check: (1) the server could hand only a bounded amount to the
kernel (socket buffers, not the stream), (2) that amount no longer grows, (3) the
process RSS did not grow with it, (4) the journal holds no more than a chunk's worth
past the cap; finally acknowledging the backlog resumes the stream.
"""

from __future__ import annotations

import anyio
import pytest

from argbridge.journal import Journal
from argbridge.sources.pipeline import DEFAULT_MAX_BYTES
from tests.support.arga_fake import running_source, simulator

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def test_paused_journal_keeps_memory_bounded_sse(tmp_path):
    async with simulator() as sim:
        run = sim.add_validation_run("flood", steps=1)
        run.flood_pad = 500
        async with Journal(
            tmp_path / "journal.db", sinks=["slow"], max_backlog_events=20
        ) as journal:
            async with running_source(tmp_path, sim, journal=journal) as h:
                before = rss()
                await h.source.follow("flood", "validation")
                with anyio.fail_after(30):
                    await sim.wait_stalled(0.5)
                assert journal.pause.is_paused
                stalled_at = sim.bytes_sent
                with anyio.fail_after(30):
                    await sim.wait_stalled(1.0)
                # Blocked for good: nothing more left the server while we are paused.
                assert sim.bytes_sent == stalled_at
                # Bounded by socket buffers (a few MiB), not by the endless stream.
                assert stalled_at < 24 * MiB
                assert rss() - before < 48 * MiB
                # Past the cap: at most what the reader held (commit in flight + queue).
                assert 20 <= journal.last_seq <= 20 + 2 * DEFAULT_MAX_BYTES // 500 + 200
                # Resume: acknowledge everything; reading continues.
                seq = journal.last_seq
                await journal.ack("slow", seq)
                with anyio.fail_after(30):
                    await journal.wait_for_events(seq + 10)  # until the cap pauses again


async def test_paused_journal_keeps_memory_bounded_websocket(tmp_path):
    async with simulator() as sim:
        run = sim.add_demo_run("flood", steps=1)
        run.flood_pad = 500
        async with Journal(
            tmp_path / "journal.db", sinks=["slow"], max_backlog_events=20
        ) as journal:
            async with running_source(
                tmp_path, sim, journal=journal, websocket={"max_queue": 16, "close_timeout": 0.2}
            ) as h:
                before = rss()
                await h.source.follow("flood", "demo")
                with anyio.fail_after(30):
                    await sim.wait_stalled(0.5)
                assert journal.pause.is_paused
                stalled_at = sim.bytes_sent
                with anyio.fail_after(30):
                    await sim.wait_stalled(1.0)
                assert sim.bytes_sent == stalled_at
                assert stalled_at < 24 * MiB
                assert rss() - before < 48 * MiB
                # The cap, plus what the reader held when the pause began: the commit in
                # flight and the hand-off queue (each at most DEFAULT_MAX_BYTES of frames).
                assert 20 <= journal.last_seq <= 20 + 2 * DEFAULT_MAX_BYTES // 500 + 2
                seq = journal.last_seq
                await journal.ack("slow", seq)
                with anyio.fail_after(30):
                    await journal.wait_for_events(seq + 10)


async def test_many_fast_streams_stay_within_the_hard_bound(tmp_path):
    """Issue 17: the default stream cap's worth of flooding streams against a sink that
    never acknowledges: the slowest sink's backlog stays within the cap plus the larger of
    20 % and 1,000 events, however much was read when the pause began."""
    cap = 5000
    async with simulator() as sim:
        for n in range(12):
            sim.add_validation_run(f"flood-{n}", steps=1).flood_pad = 500
        async with Journal(
            tmp_path / "journal.db", sinks=["stopped"], max_backlog_events=cap
        ) as journal:
            async with running_source(tmp_path, sim, journal=journal) as h:
                assert h.source.config.max_streams == 10  # the default cap
                for n in range(12):
                    await h.source.follow(f"flood-{n}", "validation")
                with anyio.fail_after(40):
                    await sim.wait_stalled(1.0)
                assert journal.pause.is_paused
                assert h.source.open_slots == 10
                bound = cap + max(cap // 5, 1000)
                assert journal.pause.hard_events == bound
                assert cap <= journal.backlog("stopped") <= bound
                assert journal.pause.peak_events <= bound
                # Draining resumes intake; the bound still holds after it pauses again.
                seq = journal.last_seq
                await journal.ack("stopped", seq)
                with anyio.fail_after(30):
                    await journal.wait_for_events(seq + cap)
                with anyio.fail_after(40):
                    await sim.wait_stalled(1.0)
                assert journal.backlog("stopped") <= bound
                assert journal.pause.peak_events <= bound
