"""Exactly-once combines with cluster mode: each instance's transactional sink uses
that instance's id (``cluster.instance_id`` unless the sink names its own)."""

from __future__ import annotations

from pathlib import Path

from argbridge.config.settings import Settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.sinks.kafka_txn import configured_instance_id
from tests.conftest import settings

SINK = {"type": "kafka", "topic": "t", "delivery": "exactly-once"}


def sink_of(s: Settings) -> KafkaSinkConfig:
    cfg = s.sinks["k"]
    assert isinstance(cfg, KafkaSinkConfig)
    return cfg


def test_the_exactly_once_sink_takes_the_cluster_instance_id(tmp_path: Path) -> None:
    off = settings(tmp_path, sinks={"k": SINK})
    on = settings(tmp_path, sinks={"k": SINK}, cluster={"enabled": True, "instance_id": "node-2"})
    own = settings(
        tmp_path,
        sinks={"k": {**SINK, "instance_id": "sink-id"}},
        cluster={"enabled": True, "instance_id": "node-2"},
    )
    # Unset: the id stored in the state dir (the same one the cluster node uses).
    assert configured_instance_id(sink_of(off), off) is None
    assert configured_instance_id(sink_of(on), on) == "node-2"
    assert configured_instance_id(sink_of(own), own) == "sink-id"
