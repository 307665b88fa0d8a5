"""What the Kafka sink writes, read back as consumers downstream read it: librdkafka
(``confluent-kafka``) and the Java console consumer of the broker's own jars, decoded
with the ``cloudevents`` SDK's Kafka binding, on Apache Kafka (the compatibility matrix
runs the first test on every version of ``ARGBRIDGE_KAFKA_VERSIONS``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from argbridge.config.settings import Settings
from argbridge.events import ATTRIBUTES
from argbridge.journal import Journal
from tests.conftest import make_event
from tests.support.kafka_sink import decode, fresh, running_sink, sink_settings

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def delivering(tmp_path: Path, s: Settings) -> AsyncIterator[Journal]:
    """A journal whose one Kafka sink delivers while the block runs, then caught up."""
    async with running_sink(tmp_path, s, within=60) as running:
        yield running.journal
        await running.worker.caught_up()


def run_events(n: int) -> list[Any]:
    return [
        make_event(i, type_="arga.validation.step", partitionkey=f"run-{i % 4}", sequence=i)
        for i in range(n)
    ]


async def test_librdkafka_reads_every_attribute_with_idempotence_on(tmp_path, kafka_any):
    topic = fresh("interop")
    s = sink_settings(tmp_path, kafka_any.bootstrap, topic=topic, enable_idempotence=True)
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
    s = sink_settings(tmp_path, kafka.bootstrap, topic=topic)
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
    s = sink_settings(tmp_path, kafka.bootstrap, topic=topic, compression=codec)
    events = [make_event(i, size=2000, partitionkey="r") for i in range(20)]
    async with delivering(tmp_path, s) as journal:
        await journal.append_many(events)
    records = await kafka.consume(topic, len(events))
    assert sorted(decode(r).get_id() for r in records) == sorted(e.id for e in events)
    assert all(orjson.loads(r.value or b"")["pad"] == "x" * 2000 for r in records)


async def test_structured_mode_is_read_back_by_librdkafka(tmp_path, kafka):
    topic = fresh("structured")
    s = sink_settings(tmp_path, kafka.bootstrap, topic=topic, mode="structured")
    events = run_events(5)
    async with delivering(tmp_path, s) as journal:
        await journal.append_many(events)
    records = await kafka.consume(topic, len(events))
    assert {decode(r).get_id() for r in records} == {e.id for e in events}
    assert all(
        dict(r.headers).get("content-type", b"").startswith(b"application/cloudevents+json")
        for r in records
    )
