"""SinkWorker: ack only after delivery, retry the same batch, dead-letter permanent errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from argbridge.backoff import Backoff
from argbridge.config.settings import FilterConfig, RouteConfig
from argbridge.errors import PermanentDeliveryError, SinkError
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Router
from argbridge.sinks.base import Delivery, Health, SinkContext, SinkWorker
from tests.conftest import make_event


class ScriptedSink:
    """Fails as scripted, records what it delivered, and lets a test hold a delivery."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.name = "s"
        self.failures = list(failures or [])
        self.delivered: list[list[str]] = []
        self.attempts = 0
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()
        self.start_failures = 0

    async def start(self) -> None:
        if self.start_failures:
            self.start_failures -= 1
            raise SinkError("cannot connect")

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        self.attempts += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append([d.event.id for d in batch])

    async def aclose(self) -> None:
        pass

    def health(self) -> Health:
        return Health()


class NoSleepClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def time(self) -> float:
        return 1e9

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await anyio.lowlevel.checkpoint()


async def run_until_caught_up(worker: SinkWorker, journal: Journal, sink: str) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            while journal.cursor(sink) < journal.last_seq:
                await anyio.wait_all_tasks_blocked()
        worker.stop()


def make_worker(journal: Journal, sink: ScriptedSink, routes=None, clock=None, metrics=None):
    ctx = SinkContext("s", journal, metrics or Metrics(), clock or NoSleepClock())
    return SinkWorker(
        sink, ctx, Router(routes or [], ["s"]), batch_size=4, backoff=Backoff(base=0.01)
    )


async def test_acks_after_delivery_in_batches(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        events = [make_event(n) for n in range(10)]
        await journal.append_many(events)
        sink = ScriptedSink()
        metrics = Metrics()
        await run_until_caught_up(make_worker(journal, sink, metrics=metrics), journal, "s")
        assert [len(b) for b in sink.delivered] == [4, 4, 2]
        assert [i for b in sink.delivered for i in b] == [e.id for e in events]
        assert metrics.sent.labels("s", "sink")._value.get() == 10


async def test_no_ack_while_delivery_is_in_flight(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(3)])
        sink = ScriptedSink()
        sink.gate = anyio.Event()
        worker = make_worker(journal, sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await sink.entered.wait()
            await anyio.wait_all_tasks_blocked()
            assert journal.cursor("s") == 0
            assert worker.in_flight == 3
            sink.gate.set()
            with anyio.fail_after(5):
                while journal.cursor("s") < 3:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()


async def test_retryable_failures_redeliver_the_same_batch(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(2)])
        sink = ScriptedSink([SinkError("503"), RuntimeError("bug"), SinkError("timeout")])
        clock = NoSleepClock()
        metrics = Metrics()
        worker = make_worker(journal, sink, clock=clock, metrics=metrics)
        await run_until_caught_up(worker, journal, "s")
        assert sink.attempts == 4
        assert len(sink.delivered) == 1 and len(sink.delivered[0]) == 2
        assert len(clock.sleeps) == 3
        assert metrics.errors.labels("s", "sink", "SinkError")._value.get() == 2
        assert metrics.errors.labels("s", "sink", "RuntimeError")._value.get() == 1
        assert worker.last_error is None


async def test_permanent_failure_dead_letters_the_batch_and_moves_on(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(2)])
        sink = ScriptedSink([PermanentDeliveryError("400 invalid_payload")])
        await run_until_caught_up(make_worker(journal, sink), journal, "s")
        dead = await journal.dead_letters("s")
        assert [d.event.id for d in dead] == [make_event(0).id, make_event(1).id]
        assert dead[0].reason == "400 invalid_payload"


async def test_sink_start_is_retried(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append(make_event(0))
        sink = ScriptedSink()
        sink.start_failures = 2
        clock = NoSleepClock()
        worker = make_worker(journal, sink, clock=clock)
        await run_until_caught_up(worker, journal, "s")
        assert worker.started and len(clock.sleeps) == 2


async def test_only_routed_events_are_delivered_but_all_are_acked(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many(
            [make_event(0, type_="argus.incident.created"), make_event(1), make_event(2)]
        )
        routes = [
            RouteConfig(
                sinks=["s"], filters=[FilterConfig.model_validate({"prefix": {"type": "argus."}})]
            )
        ]
        sink = ScriptedSink()
        await run_until_caught_up(make_worker(journal, sink, routes=routes), journal, "s")
        assert sink.delivered == [[make_event(0, type_="argus.incident.created").id]]
        assert journal.cursor("s") == 3


@pytest.mark.parametrize("batch_size", [1, 3])
async def test_stop_finishes_the_in_flight_batch(tmp_path: Path, batch_size: int):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(6)])
        sink = ScriptedSink()
        sink.gate = anyio.Event()
        worker = make_worker(journal, sink)
        worker.batch_size = batch_size
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await sink.entered.wait()
            worker.stop()
            sink.gate.set()
        assert journal.cursor("s") == batch_size


async def test_stop_while_the_sink_cannot_start_returns_at_once(tmp_path: Path):
    class ForeverClock(NoSleepClock):
        async def sleep(self, seconds: float) -> None:
            await anyio.sleep_forever()

    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = ScriptedSink()
        sink.start_failures = 10**6
        worker = make_worker(journal, sink, clock=ForeverClock())
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.wait_all_tasks_blocked()
            assert not worker.started and worker.last_error is not None
            worker.stop()
            with anyio.fail_after(5):
                await anyio.wait_all_tasks_blocked()
        assert not worker.started
