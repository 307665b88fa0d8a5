"""The exactly-once Kafka sink against Apache Kafka (one node), in-process.

Each test drives the real sink through the real :class:`SinkWorker` (or calls
``deliver`` as the worker does) and reads back with librdkafka, ``read_committed``.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest

from argbridge.backoff import Backoff
from argbridge.config.settings import Settings
from argbridge.delivery.kafka_progress import JOURNAL_ID_KEY, decode_position, progress_key
from argbridge.errors import SinkError, SinkStopped
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Router
from argbridge.sinks.base import Delivery, SinkContext, SinkWorker
from argbridge.sinks.kafka_txn import ExactlyOnceKafkaSink, build_kafka_sink
from tests.conftest import make_event, settings
from tests.support.apache_kafka import KafkaCluster, Record

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _collect_garbage():
    """A client left open shows up in the test that leaked it, not in a later one."""
    yield
    gc.collect()


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def eos_settings(tmp_path: Path, kafka: KafkaCluster, **cfg: Any) -> Settings:
    sink = {
        "type": "kafka",
        "bootstrap_servers": kafka.bootstrap,
        "delivery": "exactly-once",
        "request_timeout": 5.0,
        "call_timeout": 20.0,
        "retry_initial": 0.05,
        "retry_max": 0.5,
        "progress_topic": fresh("progress"),
        "create_topics": True,
        "topic_replication_factor": 1,
        **cfg,
    }
    return settings(tmp_path, sinks={"k": sink})


def make_sink(s: Settings, journal: Journal) -> ExactlyOnceKafkaSink:
    sink = build_kafka_sink(s.sinks["k"], SinkContext("k", journal, Metrics()), s)  # type: ignore[arg-type]
    assert isinstance(sink, ExactlyOnceKafkaSink)
    return sink


@contextlib.asynccontextmanager
async def delivering(s: Settings, journal: Journal) -> AsyncIterator[ExactlyOnceKafkaSink]:
    """The sink and its worker running while the block runs; waits until caught up."""
    sink = make_sink(s, journal)
    cfg = s.sinks["k"]
    worker = SinkWorker(
        sink,
        sink.ctx,
        Router(s.routes, list(s.sinks)),
        batch_size=cfg.batch_size,
        backoff=Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield sink
            with anyio.fail_after(60):
                await worker.caught_up()
        finally:
            worker.stop()
            tg.cancel_scope.cancel()
    await sink.aclose()


def events(n: int, start: int = 0) -> list[Any]:
    return [
        make_event(i, type_="arga.validation.step", partitionkey=f"run-{i % 4}", sequence=i)
        for i in range(start, start + n)
    ]


def ids_of(records: list[Record]) -> Counter[str]:
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


def progress_of(kafka: KafkaCluster, topic: str, key: bytes) -> Any:
    records = kafka.read_all(topic)
    values = [r.value() for r in records if r.key() == key]
    return decode_position(values[-1]) if values else None


async def test_batches_and_position_commit_together(tmp_path, kafka_any):
    kafka = kafka_any  # the version matrix (make soak adds 3.9)
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, batch_size=25, instance_id="i1")
    sent = events(100)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        async with delivering(s, journal) as sink:
            await journal.append_many(sent)
        assert sink.commits >= 4
        jid = await journal.get_state(JOURNAL_ID_KEY)
        assert journal.cursor("k") == 100
    got = await kafka.consume(topic, 100)
    assert ids_of(got) == Counter({e.id: 1 for e in sent})
    position = progress_of(kafka, s.sinks["k"].progress_topic, progress_key("i1", "k"))  # type: ignore[union-attr]
    assert position is not None and position.journal == jid and position.seq == 100
    assert position.event_id == sent[-1].id


async def test_commit_then_crash_before_cursor_resumes_after_the_commit(tmp_path, kafka):
    """A crash between the commit and the cursor update: the restart moves the cursor to
    the committed position and produces nothing twice."""
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    sent = events(30)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(sent)
        sink = make_sink(s, journal)
        await sink.start()
        records = await journal.read("k", 20)
        await sink.deliver([Delivery(r, Router(s.routes, ["k"]).routes[0]) for r in records])
        await sink.aclose()  # "crash": the worker never acked
        assert journal.cursor("k") == 0
        async with delivering(s, journal) as again:
            pass
        assert journal.cursor("k") == 30
        assert again.commits == 1
    got = await kafka.consume(topic, 30)
    assert ids_of(got) == Counter({e.id: 1 for e in sent})


async def test_retry_after_an_unseen_commit_outcome_skips_what_was_committed(tmp_path, kafka):
    """The commit went through but the sink lost the producer before it knew: the retry
    reconnects, reads the position back and produces nothing twice."""
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    sent = events(10)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(sent)
        sink = make_sink(s, journal)
        await sink.start()
        route = Router(s.routes, ["k"]).routes[0]
        batch = [Delivery(r, route) for r in await journal.read("k", 10)]
        await sink.deliver(batch)
        # Forget what was committed and drop the producer, as after an ambiguous failure.
        sink.committed = None
        assert sink.producer is not None
        await sink.producer.stop()
        sink.producer = None
        await sink.deliver(batch)
        assert sink.commits == 1
        await sink.aclose()
    got = await kafka.consume(topic, 10)
    assert ids_of(got) == Counter({e.id: 1 for e in sent})


async def test_progress_topic_wins_over_a_cursor_ahead_of_it(tmp_path, kafka):
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    sent = events(20)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(sent[:10])
        async with delivering(s, journal):
            pass
        await journal.append_many(sent[10:])
        await journal.ack("k", 15)  # the cursor claims more than Kafka committed
        async with delivering(s, journal):
            pass
        assert journal.cursor("k") == 20
    got = await kafka.consume(topic, 20)
    assert ids_of(got) == Counter({e.id: 1 for e in sent})


async def test_wiped_state_dir_with_an_existing_position_skips_nothing(tmp_path, kafka_any):
    kafka = kafka_any  # the version matrix (make soak adds 3.9)
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    first, second = events(50), events(20, start=1000)
    async with Journal(tmp_path / "old.db", sinks=["k"]) as journal:
        await journal.append_many(first)
        async with delivering(s, journal):
            pass
    # A new state dir: a new journal whose seqs 1..20 are "behind" the old position 50.
    async with Journal(tmp_path / "new.db", sinks=["k"]) as journal:
        await journal.append_many(second)
        async with delivering(s, journal):
            pass
        assert journal.cursor("k") == 20
    got = await kafka.consume(topic, 70)
    assert ids_of(got) == Counter({e.id: 1 for e in first + second})


async def test_restored_older_copy_skips_nothing(tmp_path, kafka):
    """A journal restored from a backup: same journal id, but the committed position is
    ahead of it; the events appended after the restore take seqs the position covers."""
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    base, lost, after = events(10), events(30, start=100), events(30, start=200)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(base)
        async with delivering(s, journal):
            pass
    shutil.copytree(tmp_path / "j.db", tmp_path / "backup")  # a closed journal: consistent
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(lost)
        async with delivering(s, journal):
            pass  # position: seq 40
    shutil.rmtree(tmp_path / "j.db")
    shutil.copytree(tmp_path / "backup", tmp_path / "j.db")
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(after)  # seqs 11..40 again, other events
        async with delivering(s, journal):
            pass
    got = await kafka.consume(topic, 70)
    assert ids_of(got) == Counter({e.id: 1 for e in base + lost + after})


async def test_topic_templates_span_topics_in_one_transaction_structured(tmp_path, kafka):
    prefix = fresh("tpl")
    s = eos_settings(
        tmp_path, kafka, topic=prefix + ".{subject}", mode="structured", instance_id="i1"
    )
    for n in range(3):
        kafka.create_topic(f"{prefix}.run-{n}", partitions=2, replication=1)
    sent = events(30)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(sent)
        async with delivering(s, journal) as sink:
            pass
        assert sink.commits == 1  # one journal batch: one transaction over three topics
    seen: Counter[str] = Counter()
    for n in range(3):
        for r in await kafka.consume(f"{prefix}.run-{n}", 10):
            seen[orjson.loads(r.value or b"")["id"]] += 1
    assert seen == Counter({e.id: 1 for e in sent})


async def test_a_second_instance_with_the_same_id_fences_the_first(tmp_path, kafka_any):
    kafka = kafka_any  # the version matrix (make soak adds 3.9)
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id=fresh("twin"))
    sent = events(10)
    async with (
        Journal(tmp_path / "a.db", sinks=["k"]) as ja,
        Journal(tmp_path / "b.db", sinks=["k"]) as jb,
    ):
        await ja.append_many(sent)
        older = make_sink(s, ja)
        await older.start()
        newer = make_sink(s, jb)
        await newer.start()  # InitProducerId with the same transactional_id: fences
        route = Router(s.routes, ["k"]).routes[0]
        batch = [Delivery(r, route) for r in await ja.read("k", 10)]
        with pytest.raises(SinkStopped, match="fenced"):
            await older.deliver(batch)
        assert not older.health().ready and "fenced" in older.health().detail
        with pytest.raises(SinkStopped):
            await older.deliver(batch)  # stays stopped, never re-fences the newer one
        alerts = [r.event for r in await ja.read_after(10, 10)]
        assert [a.type for a in alerts] == ["argbridge.sink.fenced"]
        await older.aclose()
        await newer.aclose()
    assert await kafka.consume(topic, 0) == []


async def test_worker_stops_the_fenced_sink_and_keeps_the_batch(tmp_path, kafka):
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id=fresh("twin"))
    async with (
        Journal(tmp_path / "a.db", sinks=["k"]) as ja,
        Journal(tmp_path / "b.db", sinks=["k"]) as jb,
    ):
        older = make_sink(s, ja)
        worker = SinkWorker(older, older.ctx, Router(s.routes, ["k"]), batch_size=50)
        newer = make_sink(s, jb)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                while not worker.started:
                    await anyio.lowlevel.checkpoint()
                await newer.start()
                await ja.append_many(events(5))
                # run() returns by itself: the sink stopped for good.
        assert worker.last_error is not None and "fenced" in worker.last_error
        assert ja.cursor("k") == 0
        await older.aclose()
        await newer.aclose()


async def test_records_the_broker_refuses_are_dead_lettered_and_the_rest_commit(tmp_path, kafka):
    topic = fresh("eos")
    kafka.create_topic(topic, partitions=1, replication=1, **{"max.message.bytes": "4000"})
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    sent = events(5)
    big = make_event(99, size=20_000, partitionkey="run-big")
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many([*sent[:2], big, *sent[2:]])
        async with delivering(s, journal):
            pass
        dead = await journal.dead_letters("k")
        assert [d.event.id for d in dead] == [big.id]
        assert "refused by the broker" in dead[0].reason
    got = await kafka.consume(topic, 5)
    assert ids_of(got) == Counter({e.id: 1 for e in sent})


async def test_retention_never_takes_what_the_progress_topic_has_not_covered(tmp_path, kafka):
    """The cursor follows the commit, and only the cursor lets retention delete: a
    batch that is not committed (or whose cursor update was lost) stays journaled."""
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic, instance_id="i1")
    sent = events(30)
    async with Journal(tmp_path / "j.db", sinks=["k"], retain_delivered=0.0) as journal:
        await journal.append_many(sent)
        sink = make_sink(s, journal)
        await sink.start()
        route = Router(s.routes, ["k"]).routes[0]
        await sink.deliver([Delivery(r, route) for r in await journal.read("k", 10)])
        await sink.aclose()  # committed up to seq 10; the cursor did not follow
        assert await journal.run_retention() == 0
        restarted = make_sink(s, journal)
        await restarted.start()  # the cursor moves to the committed position
        assert journal.cursor("k") == 10
        assert await journal.run_retention() == 10
        assert [r.seq for r in await journal.read("k", 100)] == list(range(11, 31))
        await restarted.aclose()


async def test_a_frozen_broker_mid_transaction_fails_within_call_timeout_then_retries(
    tmp_path, kafka
):
    """Every broker stopped (SIGSTOP: connections open, nothing answers) while a
    transaction is open: the attempt ends within call_timeout (plus the bounded producer
    stop) with a retryable error, never a hang; after the thaw the retry commits once."""
    topic = fresh("eos")
    s = eos_settings(
        tmp_path,
        kafka,
        topic=topic,
        instance_id="i1",
        request_timeout=1.0,
        call_timeout=3.0,
        transaction_timeout=10.0,
    )
    sent = events(10)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        await journal.append_many(sent)
        sink = make_sink(s, journal)
        await sink.start()
        route = Router(s.routes, ["k"]).routes[0]
        batch = [Delivery(r, route) for r in await journal.read("k", 10)]
        kafka.freeze()
        try:
            started = anyio.current_time()
            with pytest.raises(SinkError, match="transaction failed"):
                await sink.deliver(batch)
            assert anyio.current_time() - started < 3.0 + 5.0 + 1.0
            assert not sink.health().ready
        finally:
            kafka.thaw()
        with anyio.fail_after(60):
            while True:
                try:
                    await sink.deliver(batch)
                    break
                except SinkError:
                    await anyio.sleep(0.2)  # the broker (an outside process) recovering
        assert sink.commits == 1
        await sink.aclose()
    got = await kafka.consume(topic, 10)
    assert ids_of(got) == Counter({e.id: 1 for e in sent})


async def test_instances_with_their_own_ids_share_topics_without_fencing(tmp_path, kafka):
    """Cluster mode: each instance's sink is transactional on its own id (here made once
    and kept in each state dir) and has its own progress key; none fences another."""
    topic = fresh("eos")
    s = eos_settings(tmp_path, kafka, topic=topic)
    one, two = events(20), events(20, start=500)
    async with (
        Journal(tmp_path / "a.db", sinks=["k"]) as ja,
        Journal(tmp_path / "b.db", sinks=["k"]) as jb,
    ):
        async with delivering(s, ja) as a, delivering(s, jb) as b:
            await ja.append_many(one[:10])
            await jb.append_many(two[:10])
            await ja.append_many(one[10:])
            await jb.append_many(two[10:])
        assert a.instance_id != b.instance_id and a.fenced is None and b.fenced is None
        assert a.transactional_id != b.transactional_id
    got = await kafka.consume(topic, 40)
    assert ids_of(got) == Counter({e.id: 1 for e in one + two})
