"""A daemon that streams replayed events into an exactly-once Kafka sink, and reading
the result back: shared by the kill loops (tests/test_kafka_exactly_once.py) and the
two-instance cluster test (tests/cluster/test_cluster_eos.py).

Replay sources play the packaged sample in a loop (deterministic ids per pass); each
source's run, incident and delivery ids carry its own prefix, so no two sources (and no
two daemons with different ``tag``) dedupe against each other.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from argbridge.sources.replay import load_sample, to_event
from tests.support.apache_kafka import KafkaCluster

#: Replay sources (each appends one event at a time, so several make the stream) and the
#: pause between two items of one source: about 2,000 events/s together.
SOURCES = 10
INTERVAL = 0.003


def write_samples(folder: Path, tag: str = "s") -> list[Path]:
    """The packaged sample once per source, with run, incident and delivery ids of its
    own (the sources' events must not dedupe against each other)."""
    paths = []
    for k in range(SOURCES):
        prefix = f"{tag}{k}-"
        lines = []
        for item in load_sample(None):
            item = dict(item)
            if "run_id" in item:
                item["run_id"] = prefix + item["run_id"]
            if item.get("webhook_id"):
                item["webhook_id"] = prefix + item["webhook_id"]
            body = item.get("body")
            if isinstance(body, dict) and isinstance(body.get("incident"), dict):
                incident = {**body["incident"], "id": prefix + body["incident"]["id"]}
                item["body"] = {**body, "incident": incident}
            lines.append(orjson.dumps(item))
        path = folder / f"sample-{tag}{k}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        paths.append(path)
    return paths


def expected_ids(samples: list[Path], passes: int) -> set[str]:
    ids: set[str] = set()
    for sample in samples:
        for p in range(passes):
            for item in load_sample(sample):
                event = to_event(item, suffix=f"-p{p}" if p else "")
                assert event is not None
                ids.add(event.id)
    assert len(ids) == len(samples) * passes * len(load_sample(None))
    return ids


def write_config(
    path: Path,
    kafka: KafkaCluster,
    *,
    state: Path,
    topic: str,
    progress: str,
    delivery: str,
    passes: int,
    instance_id: str | None = "i1",
    tag: str = "s",
    extra: str = "",
) -> Path:
    """The daemon's config (``instance_id`` ``None``: the sink takes the cluster's or the
    stored id; ``extra``: more TOML, e.g. a ``[cluster]`` table)."""
    sources = "".join(
        f"""
[sources.{tag}{k}]
type = "replay"
sample = "{sample}"
interval = "{INTERVAL}s"
loop = true
max_passes = {passes}
"""
        for k, sample in enumerate(write_samples(path.parent, tag))
    )
    own_id = f'instance_id = "{instance_id}"\n' if instance_id is not None else ""
    path.write_text(
        f"""
state_dir = "{state}"
[log]
level = "debug"
format = "json"
[http]
enabled = false
[runtime]
drain_timeout = "10s"
{sources}[sinks.k]
type = "kafka"
bootstrap_servers = "{kafka.bootstrap}"
topic = "{topic}"
delivery = "{delivery}"
progress_topic = "{progress}"
{own_id}enable_idempotence = true
create_topics = true
request_timeout = "5s"
call_timeout = "20s"
transaction_timeout = "30s"
retry_initial = "0.05s"
retry_max = "0.5s"
{extra}"""
    )
    return path


def ce_ids(records: list[Any]) -> Counter[str]:
    out: Counter[str] = Counter()
    for msg in records:
        headers = dict(msg.headers() or [])
        out[headers["ce_id"].decode()] += 1
    return out


def read_until_complete(
    kafka: KafkaCluster, topic: str, expected: set[str], isolation: str, timeout: float = 120
) -> Counter[str]:
    """Read ``topic`` from the start until every expected id is there (the broker is an
    outside process: polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = ce_ids(kafka.read_all(topic, at_least=len(expected), isolation=isolation))
        if expected <= set(seen) or time.monotonic() > deadline:
            return seen
