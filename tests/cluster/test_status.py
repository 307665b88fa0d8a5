"""``argbridge status`` in cluster mode: this instance's partitions and owned runs, the
group's members, the runs each instance follows, rebalances; the metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from argbridge.commands.ops import render_status
from argbridge.runtime import App
from tests.support.apache_kafka import KafkaCluster
from tests.support.arga_fake import arga_config, eventually, simulator
from tests.support.cluster import cluster_settings
from tests.support.ops import control_client, running

pytestmark = pytest.mark.timeout(120)


async def owning(app: App, runs: int) -> bool:
    member = app.control_member
    return member is not None and len(member.owned) == runs


async def test_status_shows_members_owners_and_rebalances(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    async with simulator(heartbeat=0.5) as sim:
        for n in range(3):
            sim.add_validation_run(f"r{n}", steps=50, published=2)
        s = cluster_settings(
            tmp_path,
            kafka.bootstrap,
            cluster={"instance_id": "node-1", "session_timeout": 6, "heartbeat_interval": 2},
            sources={"arga": arga_config(sim, runs=["r0", "r1", "r2"])},
        )
        # The first start records the runs; the second finds them at its assignment (a
        # handover) and is the one looked at.
        async with running(App(s, handle_signals=False), wait_http=False) as first:
            await eventually(lambda: owning(first, 3), 60)
        async with running(App(s, handle_signals=False), wait_http=False) as app:
            await eventually(lambda: owning(app, 3), 60)
            sample = app.metrics.registry.get_sample_value
            sim.validation_runs["r0"].publish(1)
            sim.touch()

            async def produced() -> bool:
                labels = {"component": "cluster:events", "kind": "sink"}
                return (sample("argbridge_component_sent_events_total", labels) or 0) >= 1

            await eventually(produced, 60)
            async with control_client(app) as client:
                doc = (await client.get("/control/status")).json()
            assert sample("argbridge_cluster_owned_runs") == 3
            assert (sample("argbridge_cluster_rebalances_total", {"change": "assigned"}) or 0) >= 1
            assert (sample("argbridge_cluster_handover_seconds_count") or 0) >= 3
    c = doc["cluster"]
    assert c["instance_id"] == "node-1" and c["partitions"] == list(range(12))
    assert {r["id"] for r in c["owned"]} == {"r0", "r1", "r2"}
    assert c["rebalances"] >= 1 and not c["cut_off"]
    view = c["cluster"]
    assert view["members"] == ["argbridge-control-node-1"]
    assert view["following_by_owner"]["node-1"]["count"] == 3
    # The events producer is listed beside the configured sinks, marked internal.
    events = doc["sinks"]["cluster:events"]
    assert events["internal"] and events["type"] == "kafka" and events["ready"]
    assert events["cursor"] >= 1 and events["sent"] >= 1
    text = render_status(doc, "unix:argbridge.sock")
    assert any(
        line.split()[:3] == ["cluster:events", "kafka", "(internal)"] for line in text.splitlines()
    )
    assert (
        "cluster: instance node-1" in text
        and "node-1 follows 3: validation/r0, validation/r1, validation/r2" in text
    )
