"""Exactly-once in a cluster, end to end: two cluster-mode daemons, each with an
exactly-once Kafka sink into the same topic and progress topic, neither naming its own
``instance_id``: each sink is transactional on its instance's ``cluster.instance_id``, so
they never fence each other. One is SIGKILLed mid-stream and restarted: it fences only
its own previous incarnation. A ``read_committed`` librdkafka consumer then reads every
event of both exactly once.

Waiting is event-driven (the daemons' JSON log lines); the broker, an outside process, is
read with a deadline.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.support.apache_kafka import KafkaCluster
from tests.support.eos_daemon import (
    SOURCES,
    ce_ids,
    expected_ids,
    read_until_complete,
    write_config,
    write_samples,
)
from tests.support.process import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PASSES = 25


def cluster_table(deployment: str, instance: str, kafka: KafkaCluster) -> str:
    return f"""
[cluster]
enabled = true
deployment = "{deployment}"
instance_id = "{instance}"
bootstrap_servers = "{kafka.bootstrap}"
replication_factor = 1
events_partitions = 2
session_timeout = "6s"
heartbeat_interval = "1s"
"""


def test_two_instances_each_transactional_on_its_own_id(
    tmp_path: Path, kafka: KafkaCluster
) -> None:
    topic = f"cluster-eos-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=4, replication=1)
    progress = f"progress-{uuid.uuid4().hex[:8]}"
    deployment = f"eos-{uuid.uuid4().hex[:6]}"
    configs = {
        name: write_config(
            tmp_path / f"{name}.toml",
            kafka,
            state=tmp_path / name,
            topic=topic,
            progress=progress,
            delivery="exactly-once",
            passes=PASSES,
            instance_id=None,  # the sink takes cluster.instance_id
            tag=name,
            extra=cluster_table(deployment, name, kafka),
        )
        for name in ("a", "b")
    }
    expected = expected_ids(write_samples(tmp_path, "a"), PASSES) | expected_ids(
        write_samples(tmp_path, "b"), PASSES
    )
    with Daemon(configs["b"]) as b:
        with Daemon(configs["a"]) as a:
            for d in (a, b):
                line = d.wait_event("kafka.transactional_connected", timeout=90)
                assert line["transactional_id"] == f"argbridge-{'a' if d is a else 'b'}.k"
            for _ in range(5):
                a.wait_event("kafka.committed", timeout=60)
            a.signal(signal.SIGKILL)
            a.proc.wait(timeout=30)
        # a's restart fences only its own past: b keeps committing.
        marks = b.count("kafka.committed")
        with Daemon(configs["a"]) as a:
            a.wait_event("kafka.transactional_connected", timeout=90)
            for _ in range(SOURCES):
                a.wait_event("replay.finished", timeout=180)
            for _ in range(SOURCES):
                b.wait_event("replay.finished", timeout=180)
            read_until_complete(kafka, topic, expected, "read_committed")
    for d in (a, b):  # every line they wrote, up to their exit
        while (rest := d.lines.get(timeout=30)) is not None:
            d.seen.append(rest)
    assert b.count("kafka.committed") > marks
    assert a.count("kafka.fenced") == b.count("kafka.fenced") == 0
    assert a.count("sink.stopped") == b.count("sink.stopped") == 0
    seen = ce_ids(kafka.read_all(topic, at_least=len(expected)))
    assert set(seen) == expected
    duplicates = sum(n - 1 for n in seen.values())
    print(f"\ncluster exactly-once: {len(seen)} events from 2 instances, {duplicates} duplicate(s)")
    assert duplicates == 0
