"""``cluster.webhook_ack = "kafka"`` without a broker: KafkaAck over a real journal and
the events producer's ack signal (acks made as its worker makes them), on a manual clock:
acked at once, woken by the ack, refused (503) or acknowledged after the local commit
when the ack does not come within the timeout, no wait at all when Kafka is known down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from argbridge.cluster.events import EVENTS_SINK, EventsProducer
from argbridge.cluster.node import journal_sinks
from argbridge.cluster.roles import AckLevel, WebhookAcks
from argbridge.cluster.webhook_ack import JournalAck, KafkaAck
from argbridge.errors import NotAcknowledged
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from tests.conftest import make_event
from tests.support.cluster import cluster_settings
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)
TIMEOUT = 5.0


@dataclass
class Acks:
    journal: Journal
    producer: EventsProducer
    acks: KafkaAck
    clock: ManualClock
    metrics: Metrics
    down: list[str]

    async def kafka_acks(self, seq: int) -> None:
        """Kafka acked up to ``seq``: the worker moves the cursor through its role."""
        await self.producer.worker.ctx.journal.ack(EVENTS_SINK, seq)

    def count(self, ack: str) -> float:
        sample = "argbridge_cluster_webhook_acks_total"
        return self.metrics.registry.get_sample_value(sample, {"ack": ack}) or 0.0


@asynccontextmanager
async def acks(tmp_path: Path, *, fallback: bool = False) -> AsyncIterator[Acks]:
    s = cluster_settings(tmp_path, "127.0.0.1:9")
    clock, metrics, down = ManualClock(), Metrics(), list[str]()
    async with Journal(tmp_path / "j", sinks=journal_sinks(s), clock=clock) as journal:
        producer = EventsProducer(s, journal.for_sink(), metrics, clock)
        kafka_ack = KafkaAck(
            producer,
            journal.log.seq_of,
            events_config=producer.sink.config,
            timeout=TIMEOUT,
            fallback=fallback,
            unreachable=lambda: down[0] if down else None,
            clock=clock,
            metrics=metrics,
        )
        yield Acks(journal, producer, kafka_ack, clock, metrics, down)


async def test_an_acked_event_is_confirmed_at_once(tmp_path):
    async with acks(tmp_path) as a:
        role: WebhookAcks = a.acks
        event = make_event(1)
        await a.journal.append(event)
        await a.kafka_acks(1)
        assert await role.confirm(event.id) == "kafka"
        assert a.clock.sleeps == [] and a.count("kafka") == 1


async def test_confirm_waits_for_the_ack_of_its_own_seq(tmp_path):
    async with acks(tmp_path) as a:
        events = [make_event(n) for n in range(3)]
        await a.journal.append_many(events)
        got: list[AckLevel] = []

        async def confirm() -> None:
            got.append(await a.acks.confirm(events[1].id))  # seq 2

        async with anyio.create_task_group() as tg:
            tg.start_soon(confirm)
            await a.clock.wait_sleeping()
            await a.kafka_acks(1)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await a.kafka_acks(2)
        assert got == ["kafka"]
        assert a.clock.pending == []  # the timeout's sleep ended with the wait


async def test_not_acked_within_the_timeout_is_refused_then_the_retry_succeeds(tmp_path):
    async with acks(tmp_path) as a:
        event = make_event(1)
        await a.journal.append(event)
        refused: list[NotAcknowledged] = []

        async def confirm() -> None:
            with pytest.raises(NotAcknowledged) as info:
                await a.acks.confirm(event.id)
            refused.append(info.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(confirm)
            await a.clock.wait_sleeping()
            assert a.clock.pending == [TIMEOUT]
            a.clock.advance(TIMEOUT)
        assert "did not acknowledge it within 5s" in str(refused[0])
        assert "cluster.webhook_ack_timeout" in str(refused[0])
        assert a.count("refused") == 1
        # The sender retries once Kafka has it: the same event id, acked.
        await a.kafka_acks(1)
        assert await a.acks.confirm(event.id) == "kafka"


async def test_kafka_known_down_refuses_without_waiting(tmp_path):
    async with acks(tmp_path) as a:
        event = make_event(1)
        await a.journal.append(event)
        a.down.append("connection refused")
        with pytest.raises(NotAcknowledged, match=r"Kafka is unreachable \(connection refused\)"):
            await a.acks.confirm(event.id)
        assert a.clock.sleeps == []


async def test_fallback_to_journal_acknowledges_after_the_local_commit(tmp_path):
    async with acks(tmp_path, fallback=True) as a:
        event = make_event(1)
        await a.journal.append(event)
        a.down.append("timed out")
        assert await a.acks.confirm(event.id) == "journal"
        a.down.clear()
        levels: list[AckLevel] = []

        async def confirm() -> None:
            levels.append(await a.acks.confirm(event.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(confirm)
            await a.clock.wait_sleeping()
            a.clock.advance(TIMEOUT)
        assert levels == ["journal"]
        assert (a.count("journal"), a.count("refused"), a.count("kafka")) == (2, 0, 0)


async def test_an_id_the_journal_forgot_counts_as_acked(tmp_path):
    async with acks(tmp_path) as a:
        assert await a.acks.confirm("never-journaled") == "kafka"


async def test_an_event_too_large_for_the_events_topic_is_not_admitted(tmp_path):
    async with acks(tmp_path) as a:
        limit = a.producer.sink.config.max_record_bytes
        assert a.acks.admits(make_event(1, size=limit // 2)) is None
        why = a.acks.admits(make_event(2, size=limit))
        assert why is not None and f"more than the {limit} it takes" in why
        journal_mode = JournalAck(a.producer.sink.config)
        assert journal_mode.admits(make_event(2, size=limit)) == why
        assert await journal_mode.confirm("any") == "journal"
