"""Topics and permissions on a real broker (the ``kafka`` fixture with ACLs): the sink
checks its topics at start and creates or reports the missing ones; records the broker
refuses for good (unknown templated topic, topic authorization failed, too large) are
dead-lettered with the reason and never retried."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aiokafka.admin import NewTopic
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

from argbridge.config.sinks import KafkaSinkConfig
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.sinks import kafka_client
from argbridge.sinks.base import SinkContext
from argbridge.sinks.kafka import KafkaSink
from tests.conftest import make_event
from tests.support.apache_kafka import USERS, KafkaCluster
from tests.support.kafka_sink import decode, fresh, running_sink, sink_settings

pytestmark = pytest.mark.timeout(120)


def as_bob(kafka: KafkaCluster, **keys: Any) -> dict[str, Any]:
    """SASL_PLAINTEXT as bob, whom the tests take permissions from."""
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "bob",
        "sasl_password": USERS["bob"],
        **keys,
    }


@pytest.fixture
def bob(kafka: KafkaCluster) -> KafkaCluster:
    """bob may describe and write the topics named ``t-…``, and no others (ACLs outlive a
    test: adding them again changes nothing)."""
    kafka.allow("bob", "DESCRIBE", topic_prefix="t-")
    kafka.allow("bob", "WRITE", topic_prefix="t-")
    return kafka


async def test_topic_creation_names_what_the_broker_refused(kafka):
    """The admin step every module that makes its own topics shares: a topic that already
    exists (made meanwhile by another instance) is no failure; a refused one is named with
    the broker's reason."""
    admin = kafka_client.new_admin(
        KafkaSinkConfig(type="kafka", bootstrap_servers=[kafka.bootstrap])
    )
    await admin.start()
    try:
        assert await kafka_client.broker_count(admin) == 1
        made, refused = fresh("t-made"), fresh("t-refused")
        assert await kafka_client.create_topics(admin, [NewTopic(made, 2, 1)], 10) == []
        await kafka_client.wait_until_led(admin, [made], 10)  # both partitions have a leader
        described = await admin.describe_topics([made])
        assert [p["leader"] >= 0 for p in described[0]["partitions"]] == [True, True]
        assert await kafka_client.create_topics(admin, [NewTopic(made, 2, 1)], 10) == []
        failed = await kafka_client.create_topics(
            admin, [NewTopic(made, 2, 1), NewTopic(refused, 1, 3)], 10
        )
        table = fresh("t-table")
        compacted = kafka_client.compacted_topic(table, 1, 1, **{"segment.ms": "600000"})
        assert await kafka_client.create_topics(admin, [compacted], 10) == []
    finally:
        await admin.close()
    assert len(failed) == 1, failed
    assert failed[0].startswith(f"{refused}: ") and "replication factor" in failed[0]
    resource = ConfigResource("topic", table)
    futures = kafka.admin().describe_configs([resource])
    configs = await anyio.to_thread.run_sync(lambda: futures[resource].result(30))
    assert configs["cleanup.policy"].value == "compact"
    assert configs["min.insync.replicas"].value == "1"  # one replica: min(2, 1)
    assert configs["segment.ms"].value == "600000"


async def test_missing_topics_are_reported_at_start(tmp_path, kafka):
    topic = fresh("t-missing")
    s = sink_settings(tmp_path, kafka.bootstrap, topic=topic, create_topics=False)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        sink = KafkaSink(s.sinks["k"], SinkContext("k", journal, Metrics()), s)  # type: ignore[arg-type]
        try:
            with pytest.raises(Exception, match=f"missing topics: {topic}"):
                await sink.start()
            assert not sink.health().ready
            assert "create_topics = true" in sink.health().detail
        finally:
            await sink.aclose()


async def test_create_topics_creates_them_with_the_configured_partitions(tmp_path, kafka):
    topic = fresh("t-created")
    s = sink_settings(
        tmp_path,
        kafka.bootstrap,
        topic=topic,
        create_topics=True,
        topic_partitions=3,
        topic_replication_factor=1,
    )
    async with running_sink(tmp_path, s) as run:
        await run.journal.append_many([make_event(i) for i in range(3)])
        await run.worker.caught_up()
    md = await anyio.to_thread.run_sync(lambda: kafka.admin().list_topics(topic, timeout=10))
    assert len(md.topics[topic].partitions) == 3
    assert len(await kafka.consume(topic, 3)) == 3


async def test_unknown_templated_topic_is_dead_lettered_not_retried(tmp_path, kafka):
    prefix = fresh("t-sev")
    kafka.create_topic(f"{prefix}.high", partitions=1, replication=1)
    s = sink_settings(tmp_path, kafka.bootstrap, topic=prefix + ".{severity}", create_topics=False)
    events = [make_event(i, severity="high" if i % 2 else "low") for i in range(6)]
    async with running_sink(tmp_path, s) as run:
        await run.journal.append_many(events)
        await run.worker.caught_up()
        dead = await run.journal.dead_letters("k")
        assert sorted(d.event.id for d in dead) == sorted(e.id for e in events[0::2])
        assert all(f"unknown topic '{prefix}.low'" in d.reason for d in dead)
        assert run.worker.last_error is None  # never a retried failure
        assert run.count("argbridge_sink_dead_letters", component="k") == 3
    records = await kafka.consume(f"{prefix}.high", 3)
    assert sorted(decode(r).get_id() for r in records) == sorted(e.id for e in events[1::2])


async def test_topic_authorization_failed_is_dead_lettered(tmp_path, bob):
    kafka = bob
    prefix = fresh("t-nowrite")
    topic, other = f"{prefix}.denied", fresh("t-allowed")
    kafka.create_topic(topic, partitions=1, replication=1)
    kafka.create_topic(other, partitions=1, replication=1)
    kafka.deny("bob", "WRITE", topic_prefix=prefix)
    routes = [
        {"sinks": ["k"], "filters": [{"prefix": {"type": "argus."}}], "topic": topic},
        {"sinks": ["k"], "filters": [{"prefix": {"type": "arga."}}], "topic": other},
    ]
    s = sink_settings(
        tmp_path, kafka.bootstrap_for("SASL_PLAINTEXT"), routes=routes, **as_bob(kafka)
    )
    events = [
        make_event(i, type_="argus.incident.created" if i % 2 else "arga.run.started")
        for i in range(6)
    ]
    async with running_sink(tmp_path, s) as run:
        await run.journal.append_many(events)
        await run.worker.caught_up()
        dead = await run.journal.dead_letters("k")
        assert sorted(d.event.id for d in dead) == sorted(e.id for e in events[1::2])
        assert all("TopicAuthorizationFailed" in d.reason for d in dead), dead[0].reason
    records = await kafka.consume(other, 3)
    assert sorted(decode(r).get_id() for r in records) == sorted(e.id for e in events[0::2])


async def test_record_too_large_for_the_topic_is_dead_lettered_alone(tmp_path, kafka):
    topic = fresh("t-small")
    kafka.create_topic(topic, partitions=1, replication=1, **{"max.message.bytes": "4000"})
    s = sink_settings(tmp_path, kafka.bootstrap, topic=topic)
    events = [make_event(i, size=6000 if i == 2 else 600, partitionkey="k") for i in range(6)]
    async with running_sink(tmp_path, s) as run:
        await run.journal.append_many(events)
        await run.worker.caught_up()
        (dead,) = await run.journal.dead_letters("k")
        assert dead.event.id == events[2].id
        assert "MessageSizeTooLarge" in dead.reason and "max.message.bytes" in dead.reason
    records = await kafka.consume(topic, 5)
    assert sorted(decode(r).get_id() for r in records) == sorted(
        e.id for i, e in enumerate(events) if i != 2
    )
