"""A generic pull source in cluster mode: one owner runs it, its Last-Event-ID lives in
its record, and the next owner resumes from there (Apache Kafka, two members here)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from argbridge.clock import SYSTEM_CLOCK
from argbridge.cluster.member import ControlMember
from argbridge.cluster.pull import OwnedPullSource, adopt
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.registry import build_source
from argbridge.sources.base import SourceContext
from tests.cluster.test_member import JournalAcked
from tests.conftest import settings
from tests.support.apache_kafka import KafkaCluster
from tests.support.arga_fake import eventually
from tests.support.fake_streams import SSEStream, fake_upstream, sse_frame

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def instance(
    tmp_path: Path, kafka: KafkaCluster, dep: str, iid: str, url: str
) -> AsyncIterator[tuple[OwnedPullSource, Journal, anyio.CancelScope]]:
    s = settings(
        tmp_path / iid,
        sources={"ci": {"type": "sse", "url": url, "ce_type": "acme.ci"}},
        cluster={
            "enabled": True,
            "deployment": dep,
            "instance_id": iid,
            "bootstrap_servers": kafka.bootstrap,
            "session_timeout": 6,
            "heartbeat_interval": 1,
            "replication_factor": 1,
        },
    )
    async with Journal(tmp_path / iid / "journal", sinks=["s"]) as journal:
        member = ControlMember(
            s.cluster,
            instance_id=iid,
            events=JournalAcked(journal),
            journal_seq=lambda: journal.last_seq,
            metrics=Metrics(),
        )
        source = adopt(build_source("ci", s.sources["ci"], s), "sse", member)
        assert isinstance(source, OwnedPullSource)
        ctx = SourceContext("ci", journal.for_source(), Metrics(), SYSTEM_CLOCK)
        scope = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                async with anyio.create_task_group() as inner:
                    await inner.start(member.run)
                    inner.start_soon(source.run, ctx)
                    task_status.started()

        async with anyio.create_task_group() as tg:
            await tg.start(run)
            try:
                yield source, journal, scope
            finally:
                scope.cancel()


async def test_one_owner_runs_a_generic_sse_source_and_hands_over_its_position(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    dep = f"pull-{uuid.uuid4().hex[:8]}"
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(*(sse_frame({"n": n}, id=str(n)) for n in (1, 2)))
        url = f"{fake.base}/stream"
        async with instance(tmp_path, kafka, dep, "i-1", url) as (one, j1, scope1):

            async def one_read_two() -> bool:
                return one.owned and j1.last_seq >= 2

            await eventually(one_read_two, 60)
            async with instance(tmp_path, kafka, dep, "i-2", url) as (two, j2, _):
                # The join rebalances; exactly one of them runs the source after it.
                async def settled() -> bool:
                    return one.owned != two.owned and stream.open == 1

                await eventually(settled, 60)
                scope1.cancel()  # the first leaves: the second runs it

                async def second_runs() -> bool:
                    return two.owned and stream.open == 1

                await eventually(second_runs, 60)
                stream.publish(sse_frame({"n": 3}, id="3"))

                async def got_three() -> bool:
                    ids = {r.event.data["upstream"]["n"] for r in await j2.read_after(0, 100)}
                    return 3 in ids

                await eventually(got_three, 30)
                assert not one.owned
    # The new owner resumed from the Last-Event-ID recorded by the previous one.
    resumed = [h.headers.get("last-event-id") for h in fake.hits("/stream")]
    assert resumed[0] is None and "2" in resumed[1:], resumed
