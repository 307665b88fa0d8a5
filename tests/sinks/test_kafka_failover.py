"""Leader failover on a three-broker cluster (the ``kafka_cluster`` fixture: replication
factor 3, ``min.insync.replicas=2``): ``kill -9`` of a partition's leader mid-stream. With
the sink's defaults (idempotent producer, acks=all, request_timeout 30 s, call_timeout
60 s) nothing is lost, no record is duplicated by producer retries and every key keeps
its order; the election time is measured and printed (docs/kafka.md)."""

from __future__ import annotations

import time
from collections import Counter

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from tests.conftest import make_event
from tests.support.kafka_sink import decode, fresh, running_sink, sink_settings

pytestmark = pytest.mark.timeout(240)


async def test_leader_killed_mid_stream_nothing_lost_nor_duplicated(tmp_path, kafka_cluster):
    topic = fresh("failover")
    s = sink_settings(
        tmp_path,
        kafka_cluster.bootstrap,
        topic=topic,
        batch_size=200,
        topic_replication_factor=3,
        # The defaults, which must hold zero duplicates through an election.
        request_timeout=30.0,
        call_timeout=60.0,
        retry_initial=0.5,
        retry_max=30.0,
    )
    events = [make_event(i, partitionkey=f"run-{i % 16}", sequence=i) for i in range(6000)]
    async with running_sink(tmp_path, s, within=200) as run:
        await run.journal.append_many(events[:1000])
        await run.worker.caught_up()
        leader = await anyio.to_thread.run_sync(lambda: kafka_cluster.leader_of(topic, 0))
        await run.journal.append_many(events[1000:4000])
        await run.worker.delivering()  # mid-stream
        killed_at = time.monotonic()
        kafka_cluster.node(leader).kill()

        def new_leader() -> int:
            while True:  # the brokers (outside processes) polled, bounded by leader_of
                now = kafka_cluster.leader_of(topic, 0, timeout=60)
                if now != leader:
                    return int(now)
                time.sleep(0.1)

        elected = await anyio.to_thread.run_sync(new_leader)
        election = time.monotonic() - killed_at
        await run.journal.append_many(events[4000:])
        with anyio.fail_after(120):
            await run.worker.caught_up()
        drained = time.monotonic() - killed_at
        assert run.worker.last_error is None or "produce" not in run.worker.last_error
        print(
            f"\nleader {leader} of {topic}[0] killed; node {elected} leads after "
            f"{election:.1f} s; all delivered {drained:.1f} s after the kill"
        )
    records = await kafka_cluster.consume(topic, len(events), within=120)
    seen = Counter(decode(r).get_id() for r in records)
    assert set(seen) == {e.id for e in events}  # nothing lost
    assert sum(seen.values()) == len(events)  # no duplicate from producer retries
    per_key: dict[bytes, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.key is not None
        per_key.setdefault(r.key, []).append(int(decode(r).get_extension("sequence")))
    assert all(seq == sorted(seq) for seq in per_key.values())  # per-key order kept


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_soak_leader_kills_in_a_loop(tmp_path, kafka_cluster):
    """Four rounds: kill -9 the leader of a partition mid-stream, let the election
    happen, restart the node on its log dirs; the stream never stops."""
    topic = fresh("failover-loop")
    s = sink_settings(
        tmp_path,
        kafka_cluster.bootstrap,
        topic=topic,
        batch_size=200,
        topic_replication_factor=3,
        request_timeout=30.0,
        call_timeout=60.0,
        retry_initial=0.5,
        retry_max=30.0,
    )
    rounds, per_round = 4, 3000
    events = [
        make_event(i, partitionkey=f"run-{i % 16}", sequence=i) for i in range(rounds * per_round)
    ]
    async with running_sink(tmp_path, s, within=560) as run:
        for r in range(rounds):
            chunk = events[r * per_round : (r + 1) * per_round]
            leader = await anyio.to_thread.run_sync(kafka_cluster.leader_of, topic, r % 4)
            await run.journal.append_many(chunk)
            await run.worker.delivering()
            node = kafka_cluster.node(leader)
            node.kill()
            with anyio.fail_after(120):
                await run.worker.caught_up()
            node.start()  # from the main thread (see KafkaNode.start)
            await anyio.to_thread.run_sync(kafka_cluster.wait_ready)
    records = await kafka_cluster.consume(topic, len(events), within=180)
    seen = Counter(decode(r).get_id() for r in records)
    assert set(seen) == {e.id for e in events}
    assert sum(seen.values()) == len(events)
    per_key: dict[bytes, list[int]] = {}
    for rec in sorted(records, key=lambda rec: (rec.partition, rec.offset)):
        assert rec.key is not None
        per_key.setdefault(rec.key, []).append(int(decode(rec).get_extension("sequence")))
    assert all(seq == sorted(seq) for seq in per_key.values())
