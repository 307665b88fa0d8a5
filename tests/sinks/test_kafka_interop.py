"""What the Kafka sink writes, read back as consumers downstream read it: librdkafka
(``confluent-kafka``) and the Java console consumer of the broker's own jars, decoded
with the ``cloudevents`` SDK's Kafka binding, on Apache Kafka (the compatibility matrix
runs the first test on every version of ``ARGBRIDGE_KAFKA_VERSIONS``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka

from argbridge.backoff import Backoff
from argbridge.config.settings import Settings
from argbridge.events import ATTRIBUTES
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Router
from argbridge.sinks.base import SinkContext, SinkWorker
from argbridge.sinks.kafka import KafkaSink
from tests.conftest import make_event, settings
from tests.support.apache_kafka import KafkaCluster, Record

pytestmark = pytest.mark.timeout(120)


def decode(record: Record) -> Any:
    return ce_kafka.from_kafka_event(
        ce_kafka.KafkaMessage(
            headers=dict(record.headers),
            key=record.key.decode() if record.key is not None else None,
            value=record.value if record.value is not None else b"",
        )
    )


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def sink_settings(tmp_path: Path, kafka: KafkaCluster, **cfg: Any) -> Settings:
    sink = {
        "type": "kafka",
        "bootstrap_servers": kafka.bootstrap,
        "request_timeout": 5.0,
        "call_timeout": 20.0,
        "retry_initial": 0.05,
        "retry_max": 0.5,
        "create_topics": True,
        "topic_partitions": 4,
        "topic_replication_factor": 1,
        **cfg,
    }
    return settings(tmp_path, sinks={"k": sink})


@contextlib.asynccontextmanager
async def delivering(tmp_path: Path, s: Settings) -> AsyncIterator[Journal]:
    """A journal whose one Kafka sink delivers while the block runs."""
    metrics = Metrics()
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        ctx = SinkContext("k", journal, metrics)
        cfg = s.sinks["k"]
        sink = KafkaSink(cfg, ctx, s)  # type: ignore[arg-type]
        worker = SinkWorker(
            sink,
            ctx,
            Router(s.routes, list(s.sinks)),
            batch_size=cfg.batch_size,
            backoff=Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            try:
                yield journal
                with anyio.fail_after(60):
                    while journal.cursor("k") < journal.last_seq:
                        await anyio.lowlevel.checkpoint()
            finally:
                worker.stop()
                tg.cancel_scope.cancel()
        await sink.aclose()


def run_events(n: int) -> list[Any]:
    return [
        make_event(i, type_="arga.validation.step", partitionkey=f"run-{i % 4}", sequence=i)
        for i in range(n)
    ]


async def test_librdkafka_reads_every_attribute_with_idempotence_on(tmp_path, kafka_any):
    topic = fresh("interop")
    s = sink_settings(tmp_path, kafka_any, topic=topic, enable_idempotence=True)
    events = run_events(40)
    async with delivering(tmp_path, s) as journal:
        await journal.append_many(events)
    records = await kafka_any.consume(topic, len(events))
    assert len(records) == len(events)  # no duplicate from producer retries
    by_id = {e.id: e for e in events}
    per_key: dict[bytes, list[int]] = {}
    for record in records:
        got = decode(record)
        want = by_id[got.get_id()]
        assert record.key == want.partitionkey.encode()
        header_names = {name for name, _ in record.headers}
        for attr in ATTRIBUTES:
            if getattr(want, attr, None) is not None:
                assert f"ce_{attr}" in header_names or attr == "datacontenttype"
        assert got.get_type() == want.type
        assert got.get_subject() == want.subject
        assert orjson.loads(record.value or b"") == want.data
        assert record.key is not None
        per_key.setdefault(record.key, []).append(int(got.get_extension("sequence")))
    for sequences in per_key.values():
        assert sequences == sorted(sequences)  # per-key order kept


async def test_java_console_consumer_reads_keys_and_headers(tmp_path, kafka):
    topic = fresh("console")
    s = sink_settings(tmp_path, kafka, topic=topic)
    events = run_events(8)
    async with delivering(tmp_path, s) as journal:
        await journal.append_many(events)
    lines = await anyio.to_thread.run_sync(lambda: kafka.console_consume(topic, len(events)))
    lines = [line for line in lines if line.count("\t") >= 2]
    assert len(lines) == len(events)
    ids = {e.id for e in events}
    for line in lines:
        headers, key, value = line.split("\t", 2)
        assert key.startswith("run-")
        assert "ce_specversion:1.0" in headers
        seen = {h.split(":", 1)[1] for h in headers.split(",") if h.startswith("ce_id:")}
        assert seen <= ids and len(seen) == 1
        assert orjson.loads(value)["n"] in range(len(events))


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
async def test_each_codec_is_read_back_by_librdkafka(tmp_path, kafka, codec):
    topic = fresh(f"codec-{codec}")
    s = sink_settings(tmp_path, kafka, topic=topic, compression=codec)
    events = [make_event(i, size=2000, partitionkey="r") for i in range(20)]
    async with delivering(tmp_path, s) as journal:
        await journal.append_many(events)
    records = await kafka.consume(topic, len(events))
    assert sorted(decode(r).get_id() for r in records) == sorted(e.id for e in events)
    assert all(orjson.loads(r.value or b"")["pad"] == "x" * 2000 for r in records)


async def test_structured_mode_is_read_back_by_librdkafka(tmp_path, kafka):
    topic = fresh("structured")
    s = sink_settings(tmp_path, kafka, topic=topic, mode="structured")
    events = run_events(5)
    async with delivering(tmp_path, s) as journal:
        await journal.append_many(events)
    records = await kafka.consume(topic, len(events))
    assert {decode(r).get_id() for r in records} == {e.id for e in events}
    assert all(
        dict(r.headers).get("content-type", b"").startswith(b"application/cloudevents+json")
        for r in records
    )
