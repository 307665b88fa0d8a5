"""The control-topic member on Apache Kafka, two instances in this process sharing the
Arga simulator: one owner per run, handover on join and on leave, positions resumed."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

from argbridge.clock import SYSTEM_CLOCK
from argbridge.cluster.member import ControlMember
from argbridge.cluster.records import RunId, partition_of
from argbridge.config.arga import ArgaSourceConfig
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.simulator.arga import ArgaSimulator
from argbridge.sources.arga import ArgaSource
from argbridge.sources.base import SourceContext
from tests.conftest import settings
from tests.support.apache_kafka import KafkaCluster
from tests.support.arga_fake import arga_config, eventually, simulator

GONE = RunId("arga", "validation", "gone")


class JournalAcked:
    """The events topic as acked as the journal: positions are recorded at once."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def acked_seq(self) -> int:
        return self.journal.last_seq

    async def wait_acked(self, seq: int) -> None:
        return None


@dataclass
class Instance:
    iid: str
    journal: Journal
    source: ArgaSource
    member: ControlMember
    scope: anyio.CancelScope
    metrics: Metrics

    async def ids(self) -> dict[str, tuple[str | None, str]]:
        records = await self.journal.read_after(0, 100_000)
        return {r.event.id: (r.event.subject, r.event.type) for r in records}


def cluster_keys(kafka: KafkaCluster, deployment: str, bootstrap: str | None) -> dict[str, Any]:
    return {
        "enabled": True,
        "deployment": deployment,
        "bootstrap_servers": bootstrap or kafka.bootstrap,
        "session_timeout": 6,
        "heartbeat_interval": 1,
        "replication_factor": 1,
    }


@asynccontextmanager
async def instance(
    tmp_path: Path,
    sim: ArgaSimulator,
    kafka: KafkaCluster,
    deployment: str,
    iid: str,
    runs: list[str],
    *,
    bootstrap: str | None = None,
    finished_grace: float = 600.0,
    **cluster: Any,
) -> AsyncIterator[Instance]:
    s = settings(
        tmp_path / iid,
        sources={"arga": arga_config(sim, runs=runs)},
        cluster={**cluster_keys(kafka, deployment, bootstrap), "instance_id": iid, **cluster},
    )
    cfg = s.sources["arga"]
    assert isinstance(cfg, ArgaSourceConfig)
    async with Journal(tmp_path / iid / "journal", sinks=["s"]) as journal:
        ctx = SourceContext("arga", journal.for_source(), Metrics(), SYSTEM_CLOCK)
        source = ArgaSource("arga", cfg, s)
        metrics = Metrics()
        member = ControlMember(
            s.cluster,
            instance_id=iid,
            events=JournalAcked(journal),
            journal_seq=lambda: journal.last_seq,
            metrics=metrics,
            finished_grace=finished_grace,
        )
        member.register(source)
        source.attach_cluster(member)
        scope = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                async with anyio.create_task_group() as inner:
                    await inner.start(member.run)
                    inner.start_soon(source.run, ctx)
                    task_status.started()

        async with anyio.create_task_group() as tg:
            with anyio.fail_after(30):
                await tg.start(run)
            try:
                yield Instance(iid, journal, source, member, scope, metrics)
            finally:
                scope.cancel()


def owners(sim: ArgaSimulator) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a in sim.attempts:
        if a.closed is None:
            out.setdefault(a.run_id, set()).add(a.client)
    return out


async def test_two_members_share_the_runs_and_hand_them_over(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    deployment = f"own-{uuid.uuid4().hex[:8]}"
    async with simulator(heartbeat=0.2) as sim:
        runs = [f"run-{n}" for n in range(8)]
        for run_id in runs:
            sim.add_validation_run(run_id, steps=10, published=3)

        def all_open_by(clients: set[str]) -> bool:
            o = owners(sim)
            return len(o) == len(runs) and set().union(*o.values()) <= clients

        async with instance(tmp_path, sim, kafka, deployment, "i-1", runs) as one:
            with anyio.fail_after(60):
                await sim.wait_until(lambda: all_open_by({"i-1"}))
            assert len(one.member.owned) == 8
            for run in sim.validation_runs.values():
                run.publish(5)
            async with instance(tmp_path, sim, kafka, deployment, "i-2", runs) as two:
                # The join moves some partitions (and their runs) to the second member.
                with anyio.fail_after(60):
                    await sim.wait_until(
                        lambda: (
                            all_open_by({"i-1", "i-2"})
                            and {c for cs in owners(sim).values() for c in cs} == {"i-1", "i-2"}
                        )
                    )
                assert len(one.member.owned) + len(two.member.owned) == 8
                for run in sim.validation_runs.values():
                    run.publish(5)
                # A graceful leave hands the first member's runs over to the second.
                one.scope.cancel()
                with anyio.fail_after(60):
                    await sim.wait_until(lambda: all_open_by({"i-2"}))
                for run in sim.validation_runs.values():
                    run.publish(40)
                with anyio.fail_after(60):
                    await sim.wait_until(lambda: all(a.closed is not None for a in sim.attempts))

                async def released() -> bool:
                    return not two.member.owned

                await eventually(released, 30)
                ids_two = await two.ids()
                ids_one = await one.ids()
    # Never two connections to one run at once.
    assert max(a.concurrent for a in sim.attempts) == 1
    # Every upstream event (22 a run) reached one of the journals; an overlap across a
    # handover has the same (deterministic) ids.
    events = {**ids_one, **ids_two}
    for run_id in runs:
        mine = [t for subject, t in events.values() if subject == run_id]
        assert len(mine) == 22, (run_id, sorted(mine))
    # Each resumed stream asked from the recorded position, not from the start.
    resumed = [i for i in sim.last_event_ids if i]
    assert resumed, "no stream resumed from a recorded Last-Event-ID"


async def test_a_refused_run_is_recorded_and_not_retried_until_follow(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    deployment = f"own-{uuid.uuid4().hex[:8]}"
    async with simulator(heartbeat=0.2) as sim:
        sim.add_validation_run("ok", steps=30, published=2)
        runs = ["ok", "gone"]  # "gone" does not exist: 404, run_not_found
        async with instance(tmp_path, sim, kafka, deployment, "i-1", runs) as one:

            async def gone_recorded() -> bool:
                table = one.member.tables.get(partition_of(GONE, 12))
                entry = table.entries.get(GONE.key) if table else None
                return bool(entry and entry.record and entry.record.status == "not_found")

            await eventually(gone_recorded, 60)
            asked = sim.requests.get("results", 0)
            one.scope.cancel()  # a graceful leave
            async with instance(tmp_path, sim, kafka, deployment, "i-2", runs) as two:

                async def ok_followed() -> bool:
                    return RunId("arga", "validation", "ok").key in two.member.owned

                await eventually(ok_followed, 60)
                assert GONE.key not in two.member.owned
                # The new owner did not ask Arga for the refused run again.
                gone_asks = sum(1 for a in sim.attempts if a.run_id == "gone")
                assert gone_asks == 0
                before = sim.requests.get("results", 0)
                # argbridge follow retries it on purpose (a forced hint).
                assert await two.source.follow("gone", "validation", origin="control")

                async def retried() -> bool:
                    return sim.requests.get("results", 0) > before

                await eventually(retried, 30)
                assert asked >= 1


async def test_a_member_cut_off_from_kafka_stops_its_streams_by_itself(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    assert kafka.proxy is not None
    deployment = f"own-{uuid.uuid4().hex[:8]}"
    async with simulator(heartbeat=0.2) as sim:
        runs = [f"c{n}" for n in range(3)]
        for run_id in runs:
            sim.add_validation_run(run_id, steps=200, published=2)
        async with instance(
            tmp_path, sim, kafka, deployment, "i-1", runs, bootstrap=kafka.bootstrap_for("PROXIED")
        ) as one:

            async def following() -> bool:
                return len(one.member.owned) == 3 and len(owners(sim)) == 3

            await eventually(following, 60)
            kafka.proxy.cut()
            cut_at = time.monotonic()
            try:

                async def stopped() -> bool:
                    return one.member.cut_off and not one.member.owned and not owners(sim)

                await eventually(stopped, 30)
                took = time.monotonic() - cut_at
                # The lease: at most a session timeout after the last renewal (a
                # heartbeat interval before the cut at worst), then one watchdog pass.
                assert took <= 6 + 1 + 1.0, took
                cut_offs = one.metrics.registry.get_sample_value("argbridge_cluster_cut_offs_total")
                assert cut_offs == 1
            finally:
                kafka.proxy.restore()

            await eventually(following, 60)  # back in the group: it follows them again


async def test_an_assigned_partition_read_to_its_end_is_ready_without_waiting_for_messages(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    """During a rebalance nothing is written to the control topic: a newly assigned
    partition is ready once read to its end offset at assignment, not after the consume
    loop's idle wait for messages (one heartbeat interval, 15 s here)."""
    deployment = f"own-{uuid.uuid4().hex[:8]}"
    async with (
        simulator(heartbeat=0.2) as sim,
        instance(
            tmp_path, sim, kafka, deployment, "i-1", [], session_timeout=45, heartbeat_interval=15
        ) as one,
    ):
        member = one.member

        async def assigned() -> bool:
            return len(member.assigned) == 12

        await eventually(assigned, 60)

        async def ready() -> bool:
            return not member.status()["catching_up"]

        # Half the idle wait this used to take: every partition (all empty) is ready.
        await eventually(ready, member.config.heartbeat_interval / 2)
        # The control topic rolls its segments so that compaction keeps re-reads short.
        resource = ConfigResource("topic", member.topic)
        futures = kafka.admin().describe_configs([resource])
        configs = await anyio.to_thread.run_sync(lambda: futures[resource].result(30))
        assert configs["cleanup.policy"].value == "compact"
        assert configs["segment.ms"].value == "600000"


async def test_a_finished_run_s_record_is_deleted_once_its_events_are_acked(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    """A run that is done leaves no record behind once its grace is over (a tombstone,
    compaction drops it), so the control topic does not grow with every run ever
    followed; the owner does not follow it again from the messages before the tombstone."""
    deployment = f"own-{uuid.uuid4().hex[:8]}"
    short = RunId("arga", "validation", "short")
    async with simulator(heartbeat=0.2) as sim:
        run = sim.add_validation_run("short", steps=3, published=1)
        async with instance(tmp_path, sim, kafka, deployment, "i-1", [], finished_grace=0.5) as one:
            # ``argbridge follow``: a forced hint (a config run would keep its record).
            assert await one.source.follow("short", "validation", origin="control")

            async def followed() -> bool:
                return short.key in one.member.owned

            await eventually(followed, 60)
            run.publish()  # the rest, terminal event included
            sim.touch()

            async def deleted() -> bool:
                table = one.member.tables.get(partition_of(short, 12))
                entry = table.entries.get(short.key) if table else None
                gone = entry is not None and entry.record is None
                return gone and short.key not in one.member.owned

            await eventually(deleted, 60)
            view = await one.member.cluster_view()
            assert view["runs"] == 0 and view["statuses"] == {}
            assert sum(1 for a in sim.attempts if a.run_id == "short") == 1
