"""The Kafka sink against a real broker (the ``broker`` fixture: Apache Kafka, Tansu only
where Java is missing), decoded with the ``cloudevents`` package's Kafka binding. The
broker is shared by the session: every test writes to fresh topic names."""

from __future__ import annotations

from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from argbridge.config.settings import Settings
from argbridge.delivery.kafka_records import choose_partition
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.sinks.base import SinkContext
from argbridge.sinks.kafka import KafkaSink
from tests.conftest import make_event, settings
from tests.support.apache_kafka import KafkaCluster
from tests.support.kafka_sink import Running, decode, fresh, running_sink
from tests.support.tansu import Tansu

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def kafka_settings(tmp_path: Path, broker: KafkaCluster | Tansu, **cfg: Any) -> Settings:
    routes = cfg.pop("routes", None)
    sink = {
        "type": "kafka",
        "bootstrap_servers": broker.bootstrap,
        "topic": fresh("ab") + ".{type}",
        # Apache Kafka: the idempotent producer (the default); Tansu cannot do it.
        "enable_idempotence": isinstance(broker, KafkaCluster),
        # Apache Kafka here does not create topics on demand; the sink creates them.
        "create_topics": isinstance(broker, KafkaCluster),
        "topic_partitions": 4,
        "topic_replication_factor": 1,
        "request_timeout": 1.0,
        "call_timeout": 3.0,
        "retry_initial": 0.01,
        "retry_max": 0.05,
        **cfg,
    }
    extra = {"routes": routes} if routes else {}
    return settings(tmp_path, sinks={"k": sink}, **extra)


def running(tmp_path: Path, s: Settings) -> AbstractAsyncContextManager[Running[KafkaSink]]:
    """The sink and its worker while the block runs (40 s at most)."""
    return running_sink(tmp_path, s, within=40)


async def test_binary_records_keys_and_headers_decode(tmp_path, broker):
    prefix = fresh("ab")
    s = kafka_settings(tmp_path, broker, topic=prefix + ".{type}")
    async with running(tmp_path, s) as run:
        journal, sink, metrics = run.journal, run.sink, run.metrics
        events = [
            make_event(n, type_="arga.validation.step", partitionkey=f"run-{n % 3}", sequence=n)
            for n in range(30)
        ]
        await journal.append_many(events)
        await run.worker.caught_up()
        assert sink.health().ready and "connected" in sink.health().detail
        sent = metrics.registry.get_sample_value(
            "argbridge_component_sent_events_total", {"component": "k", "kind": "sink"}
        )
        assert sent == 30
    records = await broker.consume(f"{prefix}.arga.validation.step", 30)
    assert len(records) == 30
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for r in records:
        ev = decode(r)
        attrs = ev.get_attributes()
        assert r.key is not None
        assert attrs["partitionkey"] == r.key.decode()
        assert attrs["type"] == "arga.validation.step"
        assert dict(r.headers)["content-type"] == b"application/json"
        by_key[r.key].append(ev.get_data()["n"])
        partitions[r.key].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values())  # one partition per run
    for key, ns in by_key.items():
        assert ns == sorted(ns), f"order broken for {key!r}"
    assert sorted(n for ns in by_key.values() for n in ns) == list(range(30))


async def test_structured_mode_gzip_and_route_topic(tmp_path, broker):
    prefix = fresh("incidents")
    routes = [{"sinks": ["k"], "topic": prefix + ".{severity}"}]
    s = kafka_settings(tmp_path, broker, mode="structured", compression="gzip", routes=routes)
    async with running(tmp_path, s) as run:
        journal = run.journal
        await journal.append_many(
            [make_event(n, severity="high", partitionkey="inc-1") for n in range(5)]
        )
        await run.worker.caught_up()
    records = await broker.consume(f"{prefix}.high", 5)
    assert [decode(r).get_data()["n"] for r in records] == [0, 1, 2, 3, 4]
    assert dict(records[0].headers)["content-type"].startswith(b"application/cloudevents+json")


async def test_two_routes_send_an_event_to_each_route_topic(tmp_path, broker):
    # Two routes: the worker hands the sink a list of deliveries (not one RouteBatch).
    incidents_topic, all_topic = fresh("incidents"), fresh("all-events")
    routes = [
        {"sinks": ["k"], "filters": [{"prefix": {"type": "argus."}}], "topic": incidents_topic},
        {"sinks": ["k"]},
    ]
    s = kafka_settings(tmp_path, broker, topic=all_topic, routes=routes)
    async with running(tmp_path, s) as run:
        journal = run.journal
        await journal.append_many(
            [
                make_event(n, type_="argus.incident.created" if n % 2 else "arga.run.started")
                for n in range(6)
            ]
        )
        await run.worker.caught_up()
    incidents = await broker.consume(incidents_topic, 3)
    everything = await broker.consume(all_topic, 6)
    assert sorted(decode(r).get_data()["n"] for r in incidents) == [1, 3, 5]
    assert sorted(decode(r).get_data()["n"] for r in everything) == list(range(6))


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy"])
async def test_cramjam_codecs(tmp_path, broker, codec):
    topic = fresh("codec")
    s = kafka_settings(tmp_path, broker, compression=codec, topic=topic)
    async with running(tmp_path, s) as run:
        journal = run.journal
        await journal.append_many([make_event(n, size=2000, partitionkey="p") for n in range(10)])
        await run.worker.caught_up()
    records = await broker.consume(topic, 10)
    assert [decode(r).get_data()["n"] for r in records] == list(range(10))


async def test_broker_down_at_start_names_the_cause(tmp_path):
    from tests.conftest import free_port

    nobody = SimpleNamespace(bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens here
    s = kafka_settings(tmp_path, nobody, topic="late", call_timeout=2.0)  # type: ignore[arg-type]
    metrics = Metrics()
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        ctx = SinkContext("k", journal, metrics)
        sink = KafkaSink(s.sinks["k"], ctx, s)  # type: ignore[arg-type]
        with pytest.raises(Exception, match=r"cannot connect.*connection refused"):
            await sink.start()
        assert not sink.health().ready
        assert "broker unavailable" in sink.health().detail
        assert "connection refused" in sink.health().detail
        await sink.aclose()


async def test_broker_outage_mid_run_loses_nothing_and_keeps_order(tmp_path, broker):
    topic = fresh("outage")
    s = kafka_settings(tmp_path, broker, topic=topic, batch_size=50)
    async with running(tmp_path, s) as run:
        journal, sink = run.journal, run.sink
        await journal.append_many([make_event(n, partitionkey=f"r{n % 4}") for n in range(100)])
        await run.worker.caught_up()
        broker.freeze()
        await journal.append_many(
            [make_event(n, partitionkey=f"r{n % 4}") for n in range(100, 300)]
        )
        while sink.health().ready:  # the frozen broker times a produce out
            await sink.next_probe()
        assert "broker unavailable" in sink.health().detail
        assert journal.cursor("k") < journal.last_seq  # the journal holds the backlog
        broker.thaw()
        await run.worker.caught_up()
        while not sink.health().ready:  # (readiness follows the probe)
            await sink.next_probe()
    records = await broker.consume(topic, 300)
    seen: dict[str, list[int]] = defaultdict(list)
    for r in records:
        ev = decode(r)
        seen[ev.get_attributes()["partitionkey"]].append(ev.get_data()["n"])
    numbers = {n for ns in seen.values() for n in ns}
    assert numbers == set(range(300))  # every event delivered (duplicates allowed)
    for key, ns in seen.items():
        firsts = list(dict.fromkeys(ns))  # a resent batch repeats a run, in order
        assert firsts == sorted(firsts), f"order broken for {key}"


async def test_oversized_record_is_dead_lettered_and_requeued_ones_are_sent(tmp_path, broker):
    topic = fresh("dlq")
    s = kafka_settings(tmp_path, broker, topic=topic, max_record_bytes=8192)
    async with running(tmp_path, s) as run:
        journal, sink = run.journal, run.sink
        await journal.append_many([make_event(1), make_event(2, size=20_000), make_event(3)])
        await run.worker.caught_up()
        (dl,) = await journal.dead_letters("k")
        assert dl.event.id == make_event(2).id and "max_record_bytes" in dl.reason
        # An operator replays another event that had failed (simulated dead letter).
        record = (await journal.read_after(0, 1))[0]
        await journal.dead_letter("k", record, "simulated", 1)
        await journal.requeue_dead_letters("k", dlids=[dl.dlid + 1])
        sink.wake()
        await sink.requeue.caught_up()
        assert await journal.count_retries("k") == 0
    records = await broker.consume(topic, 3)
    assert [decode(r).get_data()["n"] for r in records] == [1, 3, 1]


async def test_readyz_reports_the_broker_state(tmp_path, broker):
    import httpx

    from tests.conftest import free_port
    from tests.support.daemon import running_app

    sink = {
        "type": "kafka",
        "bootstrap_servers": broker.bootstrap,
        "topic": fresh("ready"),
        "enable_idempotence": isinstance(broker, KafkaCluster),
        # Apache Kafka here does not create topics on demand; the sink creates them.
        "create_topics": isinstance(broker, KafkaCluster),
        "topic_partitions": 4,
        "topic_replication_factor": 1,
        "request_timeout": 0.5,
        "call_timeout": 1.0,
        "retry_initial": 0.01,
        "retry_max": 0.05,
    }
    s = settings(tmp_path, http={"enabled": True, "port": free_port()}, sinks={"k": sink})
    async with running_app(s) as (app, url), httpx.AsyncClient(base_url=url) as http:
        kafka_sink, worker = app.sinks["k"], app.workers["k"]
        assert isinstance(kafka_sink, KafkaSink)
        await app.journal.append(make_event(1))
        await worker.caught_up()
        r = await http.get("/readyz")
        assert r.status_code == 200, r.text
        broker.freeze()
        await app.journal.append(make_event(2))
        while kafka_sink.health().ready:
            await kafka_sink.next_probe()
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert "broker unavailable" in r.json()["components"]["sink:k"]["detail"]
        broker.thaw()
        await worker.caught_up()
        assert app.journal.cursor("k") >= 2
        while not kafka_sink.health().ready:  # (readiness follows the probe)
            await kafka_sink.next_probe()
        assert (await http.get("/readyz")).status_code == 200


async def test_fixed_topic_binary_records_from_the_stored_body_through_the_pipeline(
    tmp_path, broker
):
    # A fixed topic takes the fast path (records straight from the journal's JSON) and
    # small batches keep several journal batches in flight in the pipelined worker.
    topic = fresh("fixed")
    s = kafka_settings(tmp_path, broker, topic=topic, batch_size=7)
    events = [
        make_event(
            n,
            partitionkey=f"run-{n % 3}",
            sequence=n,
            severity="high",
            time="2026-01-02T03:04:05.678Z",
            extensions={"flag": n % 2 == 0, "count": n, "traceparent": f"00-{n:032x}-ab-01"},
        )
        for n in range(200)
    ]
    async with running(tmp_path, s) as run:
        journal, metrics = run.journal, run.metrics
        await journal.append_many(events)
        await run.worker.caught_up()
        sent = metrics.registry.get_sample_value(
            "argbridge_component_sent_events_total", {"component": "k", "kind": "sink"}
        )
        assert sent == 200
        latency_count = metrics.registry.get_sample_value(
            "argbridge_delivery_latency_seconds_count", {"component": "k"}
        )
        assert latency_count == 200  # one observation per event, though added per batch
    records = await broker.consume(topic, 200)
    assert len(records) == 200  # no failure: exactly once
    by_id = {e.id: e for e in events}
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in records:
        got = decode(r)
        want = by_id[got.get_attributes()["id"]]
        attrs = got.get_attributes()
        assert attrs["partitionkey"] == want.partitionkey == r.key.decode()
        assert attrs["sequence"] == str(want.sequence)
        assert attrs["severity"] == "high"
        assert dict(r.headers)["ce_time"] == str(want.time).encode()
        assert attrs["flag"] == ("true" if want.extensions["flag"] else "false")
        assert attrs["count"] == str(want.extensions["count"])
        assert got.get_data() == want.data
        assert r.value == orjson.dumps(want.data)
        by_key[r.key].append(want.data["n"])
    for key, ns in by_key.items():
        assert ns == sorted(ns), f"order broken for {key!r}"


async def test_partition_and_topic_caches_stay_bounded(tmp_path, broker, monkeypatch):
    """Issue 17: one cache entry per distinct key (or templated topic) forever grew
    without bound. With small bounds, 120 keys over 6 topics stay within them, and every
    key still lands on the partition the default partitioner picks."""
    from argbridge.sinks import kafka as kafka_sink

    monkeypatch.setattr(kafka_sink, "MAX_CACHED_KEYS", 16)
    monkeypatch.setattr(kafka_sink, "MAX_CACHED_TOPICS", 2)
    prefix = fresh("bounded")
    if isinstance(broker, KafkaCluster):  # no auto-creation there, as on managed clusters
        for subject in range(6):
            broker.create_topic(f"{prefix}.s{subject}", partitions=4, replication=1)
    s = kafka_settings(tmp_path, broker, topic=prefix + ".{subject}")
    events = [
        make_event(n, subject=f"s{n % 6}", partitionkey=f"key-{n}", sequence=n) for n in range(120)
    ]
    async with running(tmp_path, s) as run:
        journal, sink = run.journal, run.sink
        for n in range(0, 120, 20):
            await journal.append_many(events[n : n + 20])
            await run.worker.caught_up()
            assert len(sink._partitions) <= 2
            assert all(len(keys) <= 16 for _, keys in sink._partitions.values())
    for subject in range(6):
        records = await broker.consume(f"{prefix}.s{subject}", 20)
        assert len(records) == 20
        for r in records:  # the topics have 4 partitions
            assert r.key is not None
            assert r.partition == choose_partition(r.key, [0, 1, 2, 3], "")


@pytest.mark.parametrize("key_fallback", [False, True])
async def test_the_one_route_loop_sends_what_the_general_loop_sends(tmp_path, broker, key_fallback):
    """A batch for one route to a fixed topic (a ``RouteBatch``: the sink's own loop) and
    the same events as a list of deliveries (the general loop) give the same records,
    byte for byte: key, headers in order, value, partition."""
    from argbridge.router import Route
    from argbridge.sinks.base import Delivery, RouteBatch

    one, general = fresh("one-route"), fresh("general")
    if isinstance(broker, KafkaCluster):
        for topic in (one, general):
            broker.create_topic(topic, partitions=4, replication=1)
    s = kafka_settings(tmp_path, broker, topic=one)
    events = [
        make_event(
            n,
            partitionkey=f"run-{n % 5}" if n % 4 else None,
            subject=None if n % 7 == 0 else f"runs/{n % 3}",
            sequence=n,
            severity="high" if n % 2 else None,
            extensions={"flag": n % 3 == 0, "count": n, "traceparent": f"00-{n:032x}-ab-01"}
            if n % 5
            else {},
        )
        for n in range(60)
    ]
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(events)
        records = await journal.read_after(0, len(events))
        sink = KafkaSink(
            s.sinks["k"],  # type: ignore[arg-type]
            SinkContext("k", journal, Metrics()),
            s,
            key_fallback=key_fallback,
        )
        try:
            await sink.start()
            await sink.deliver(RouteBatch(records, Route("r", ("k",), ())))
            to_general = Route("g", ("k",), (), general)
            await sink.deliver([Delivery(r, to_general) for r in records])
        finally:
            await sink.aclose()

    def by_id(records: list[Any]) -> dict[bytes, tuple[Any, ...]]:
        return {dict(r.headers)["ce_id"]: (r.key, r.headers, r.value, r.partition) for r in records}

    sent = by_id(await broker.consume(one, len(events)))
    assert len(sent) == len(events)
    assert sent == by_id(await broker.consume(general, len(events)))
    keyless = [k for k, *_ in sent.values() if k is None]
    assert len(keyless) == (0 if key_fallback else 15)
