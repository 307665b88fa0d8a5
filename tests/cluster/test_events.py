"""The internal events topic producer (cluster mode) against Apache Kafka, and its
progress as ``EventsAcked``: every journaled event (data and argbridge's own) reaches
the events topic in CloudEvents binary mode, keyed so a run's events keep their order;
``wait_acked`` wakes on the acks."""

from __future__ import annotations

from collections import defaultdict

import anyio
import pytest

from argbridge.clock import SYSTEM_CLOCK
from argbridge.cluster.events import EVENTS_SINK, EventsProducer, events_sink_config
from argbridge.cluster.node import ClusterNode, journal_sinks
from argbridge.cluster.roles import EventsAcked
from argbridge.errors import ConfigError
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from tests.conftest import make_event
from tests.support.cluster import cluster_settings, running_node
from tests.support.kafka_sink import decode

pytestmark = pytest.mark.timeout(120)


async def test_every_journaled_event_reaches_the_events_topic_keyed(tmp_path, kafka):
    # Three replicas asked of a one-broker cluster: capped, with a warning.
    s = cluster_settings(tmp_path, kafka.bootstrap, cluster={"replication_factor": 3})
    events = [make_event(n) for n in range(30)]  # subject run-0..2, no partitionkey
    events += [make_event(100 + n, partitionkey="wf-7") for n in range(5)]
    events += [make_event(200, subject=None)]  # neither: keyed by its id
    events.append(make_event(300, type_="argbridge.alert.sink_stopped", subject=None))
    async with running_node(tmp_path, s) as run:
        await run.journal.append_many(events)
        last = run.journal.last_seq
        await run.node.events.wait_acked(last)
        assert run.node.events.acked_seq() == last == len(events)
        records = await kafka.consume(run.topic, len(events))
        assert run.node.health()[EVENTS_SINK].ready
    decoded = [(r, decode(r)) for r in records]
    assert sorted(e.get_id() for _, e in decoded) == sorted(e.id for e in events)
    by_id = {e.id: e for e in events}
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    order: dict[bytes, list[int]] = defaultdict(list)
    for r, ce in decoded:
        event = by_id[ce.get_id()]
        expected = event.partitionkey or event.subject or event.id
        assert r.key == expected.encode()
        assert r.topic == run.topic
        # Binary mode, as the Kafka sink writes it: ce_ headers, the data as the value.
        assert dict(r.headers)["ce_type"] == event.type.encode()
        assert ce.get_data() == event.data
        partitions_of_key[r.key].add(r.partition)
        order[r.key].append(event.data["n"])
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert all(ns == sorted(ns) for ns in order.values())
    md = kafka.admin().list_topics(run.topic, timeout=10)
    assert len(md.topics[run.topic].partitions) == 3


async def test_wait_acked_wakes_on_each_ack_of_the_worker(tmp_path):
    s = cluster_settings(tmp_path, "127.0.0.1:9")
    async with Journal(tmp_path / "j", sinks=journal_sinks(s)) as journal:
        producer = EventsProducer(s, journal.for_sink(), Metrics(), SYSTEM_CLOCK)
        acked: EventsAcked = producer
        await journal.append_many([make_event(n) for n in range(3)])
        assert acked.acked_seq() == 0
        done = anyio.Event()

        async def waiter() -> None:
            await acked.wait_acked(2)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            # The worker acks through its journal role: the producer hears of each ack.
            await producer.worker.ctx.journal.ack(EVENTS_SINK, 1)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set() and acked.acked_seq() == 1
            await producer.worker.ctx.journal.ack(EVENTS_SINK, 3)
            with anyio.fail_after(5):
                await done.wait()
        assert acked.acked_seq() == 3
        await acked.wait_acked(3)  # already acked: returns at once


async def test_the_events_cursor_holds_retention_until_kafka_has_the_events(tmp_path):
    s = cluster_settings(tmp_path, "127.0.0.1:9")
    assert journal_sinks(s) == [EVENTS_SINK]
    async with Journal(tmp_path / "j", sinks=journal_sinks(s), retain_delivered=0) as journal:
        await journal.append_many([make_event(n) for n in range(3)])
        assert await journal.run_retention() == 0
        assert journal.backlog(EVENTS_SINK) == 3


def test_events_sink_config_takes_the_cluster_connection_keys(tmp_path):
    s = cluster_settings(
        tmp_path, "10.0.0.1:9092,10.0.0.2:9092", cluster={"client_id": "c1", "events_topic": "t"}
    )
    cfg = events_sink_config(s.cluster)
    assert cfg.servers() == "10.0.0.1:9092,10.0.0.2:9092"
    assert (cfg.client_id, cfg.topic, cfg.acks, cfg.enable_idempotence) == ("c1", "t", "all", True)
    assert (cfg.mode, cfg.topic_partitions) == ("binary", 3)


def test_a_sink_named_like_the_events_sink_is_refused(tmp_path):
    s = cluster_settings(tmp_path, "127.0.0.1:9", sinks={EVENTS_SINK: {"type": "file"}})
    with pytest.raises(ConfigError, match="cluster mode's own"):
        ClusterNode(s, None, Metrics(), SYSTEM_CLOCK)  # type: ignore[arg-type]


async def test_the_instance_id_is_kept_or_configured(tmp_path):
    s = cluster_settings(tmp_path, "127.0.0.1:9")
    ids = []
    for _ in range(2):
        async with Journal(tmp_path / "j", sinks=journal_sinks(s)) as journal:
            node = ClusterNode(s, journal.for_sink(), Metrics(), SYSTEM_CLOCK)
            await node.open()
            ids.append(node.instance_id)
    assert ids[0] == ids[1]
    named = cluster_settings(tmp_path, "127.0.0.1:9", cluster={"instance_id": "i-1"})
    async with Journal(tmp_path / "j", sinks=journal_sinks(named)) as journal:
        node = ClusterNode(named, journal.for_sink(), Metrics(), SYSTEM_CLOCK)
        await node.open()
        assert node.instance_id == "i-1"
