"""SinkWorker: ack only after delivery, retry the same batch, dead-letter permanent errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal

import anyio
import pytest

from argbridge.backoff import Backoff
from argbridge.config.settings import FilterConfig, RouteConfig
from argbridge.errors import PermanentDeliveryError, SinkError, SinkStopped
from argbridge.journal import Journal, JournalRecord
from argbridge.journal.roles import ExactlyOnceSinkJournal
from argbridge.metrics import Metrics
from argbridge.registry import build_sink, sink_journal
from argbridge.router import Router
from argbridge.sinks.base import (
    Background,
    Delivery,
    Health,
    Pipelined,
    ReportsSent,
    Resumable,
    RouteBatch,
    SelfDisabling,
    SinkContext,
    SinkWorker,
    Wakeable,
    records_of,
)
from tests.conftest import make_event, settings

#: Public samples of the sink counters (the registry's ``get_sample_value``).
SENT = "argbridge_component_sent_events_total"
ERRORS = "argbridge_component_errors_total"


def count(metrics: Metrics, name: str, **labels: str) -> float:
    """Sink ``s``'s sample ``name`` (0 before it was first counted)."""
    value = metrics.registry.get_sample_value(name, {"component": "s", "kind": "sink", **labels})
    return value or 0.0


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
            await worker.caught_up()
        assert journal.cursor(sink) == journal.last_seq
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
        assert count(metrics, SENT) == 10


async def test_one_filterless_route_hands_the_sink_a_route_batch(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(3)])
        seen: list[Sequence[Delivery]] = []
        sink = ScriptedSink()
        inner = sink.deliver

        async def deliver(batch: Sequence[Delivery]) -> None:
            seen.append(batch)
            await inner(batch)

        sink.deliver = deliver  # type: ignore[method-assign]
        worker = make_worker(journal, sink)
        await run_until_caught_up(worker, journal, "s")
        (batch,) = seen
        assert type(batch) is RouteBatch
        records = await journal.read_after(0, 10)
        route = worker.router.routes[0]
        # A sequence of deliveries like any other, made on demand.
        assert list(batch) == [Delivery(r, route) for r in records]
        assert len(batch) == 3 and batch[1] == Delivery(records[1], route)
        assert batch[1:] == [Delivery(r, route) for r in records[1:]]
        assert records_of(batch) == records == records_of(list(batch))
        assert "3 records" in repr(batch)


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
        assert count(metrics, ERRORS, error_type="SinkError") == 2
        assert count(metrics, ERRORS, error_type="RuntimeError") == 1
        assert worker.last_error is None


@pytest.mark.parametrize("during", ["deliver", "start"])
async def test_a_sink_that_stops_ends_its_worker_and_keeps_the_batch(tmp_path: Path, during: str):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(6)])
        sink = ScriptedSink([SinkError("503"), SinkStopped("fenced by another instance")])
        if during == "start":
            sink.start = _raise(SinkStopped("fenced by another instance"))  # type: ignore[method-assign, assignment]
        metrics = Metrics()
        worker = make_worker(journal, sink, metrics=metrics)
        with anyio.fail_after(10):
            await worker.run()  # returns by itself: no retry after SinkStopped
        assert journal.cursor("s") == 0 and sink.delivered == []
        assert worker.last_error == "stopped: fenced by another instance"
        assert count(metrics, ERRORS, error_type="SinkStopped") == 1


def _raise(exc: BaseException) -> Callable[[], Awaitable[None]]:
    async def fail() -> None:
        raise exc

    return fail


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


class PipelinedSink(ScriptedSink):
    """A sink with the two-phase ``submit``: each submitted batch is confirmed only when
    its gate (if any) is set; confirmations fail as scripted."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        super().__init__(failures)
        self.submitted: list[list[int]] = []
        self.confirmed: list[list[int]] = []
        self.gates: dict[int, anyio.Event] = {}
        self.fail_on: dict[int, BaseException] = {}
        self.serial: list[list[int]] = []  # batches that went through plain deliver()
        self.changed = anyio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def submit(self, batch: Sequence[Delivery]) -> Callable[[], Awaitable[None]]:
        index = len(self.submitted)
        seqs = [d.record.seq for d in batch]
        self.submitted.append(seqs)
        self._changed()

        async def confirmed() -> None:
            gate = self.gates.get(index)
            if gate is not None:
                await gate.wait()
            if index in self.fail_on:
                raise self.fail_on.pop(index)
            if self.failures:
                raise self.failures.pop(0)
            self.confirmed.append(seqs)
            self._changed()

        return confirmed

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        self.serial.append([d.record.seq for d in batch])
        await (await self.submit(batch))()


async def wait_for(predicate: Callable[[], bool], sink: PipelinedSink) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await sink.changed.wait()


async def test_pipeline_submits_ahead_and_acks_in_order_after_each_confirmation(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(10)])
        sink = PipelinedSink()
        sink.gates = {0: anyio.Event(), 1: anyio.Event()}
        metrics = Metrics()
        worker = make_worker(journal, sink, metrics=metrics)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            # Batch 2 is read and submitted while batch 1 still awaits its confirmation.
            await wait_for(lambda: len(sink.submitted) >= 2, sink)
            await anyio.wait_all_tasks_blocked()
            assert journal.cursor("s") == 0 and sink.confirmed == []
            assert worker.in_flight >= 8
            sink.gates[1].set()  # a later confirmation cannot ack ahead of batch 1
            await anyio.wait_all_tasks_blocked()
            assert journal.cursor("s") == 0
            sink.gates[0].set()
            with anyio.fail_after(5):
                while journal.cursor("s") < 10:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()
        assert sink.submitted == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
        assert sink.confirmed == sink.submitted
        assert count(metrics, SENT) == 10


async def test_pipeline_failure_resends_from_the_first_unacked_batch(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(10)])
        sink = PipelinedSink()
        sink.gates = {1: anyio.Event()}  # batch 2 fails once batch 3 is submitted
        sink.fail_on = {1: SinkError("broker gone")}
        clock = NoSleepClock()
        metrics = Metrics()
        worker = make_worker(journal, sink, clock=clock, metrics=metrics)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(sink.submitted) >= 3, sink)
            sink.gates[1].set()
            with anyio.fail_after(5):
                while journal.cursor("s") < 10:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()
        # Batch 1 acked; batch 2 failed (batch 3 was submitted, never acked): both are
        # read again from the cursor, batch 2 through the retrying loop first.
        assert sink.submitted[:3] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
        assert sink.submitted[3:] == [[5, 6, 7, 8], [9, 10]]
        assert sink.confirmed[0] == [1, 2, 3, 4]
        assert sink.confirmed[-2:] == [[5, 6, 7, 8], [9, 10]]
        assert len(clock.sleeps) == 1
        assert count(metrics, ERRORS, error_type="SinkError") == 1
        assert worker.last_error is None and worker.in_flight == 0


async def test_pipeline_failure_of_a_permanent_kind_dead_letters_that_batch(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(6)])
        sink = PipelinedSink([PermanentDeliveryError("400"), PermanentDeliveryError("400")])
        await run_until_caught_up(make_worker(journal, sink), journal, "s")
        dead = await journal.dead_letters("s")
        assert [d.seq for d in dead] == [1, 2, 3, 4]
        assert journal.cursor("s") == 6


async def test_pipeline_rewind_makes_in_flight_acks_stale_and_restarts_from_the_cursor(
    tmp_path: Path,
):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(40)])
        sink = PipelinedSink()
        sink.gates = {1: anyio.Event()}
        worker = make_worker(journal, sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(sink.submitted) >= 3 and journal.cursor("s") == 4, sink)
            # A replay moves the cursor back while batches 2 and 3 are in flight: their
            # acks are stale, and what follows must come from the rewound cursor.
            await journal.rewind("s", 2)
            worker.poke()
            sink.gates[1].set()
            with anyio.fail_after(5):
                while journal.cursor("s") < 40:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()
        delivered = [seq for b in sink.confirmed for seq in b]
        assert delivered.count(3) == 2 and delivered.count(4) == 2  # replayed
        assert set(delivered) == set(range(1, 41))
        after_rewind = delivered[delivered.index(3, 3) :]
        assert after_rewind == list(range(3, 41))  # in order from the rewound cursor
        # The first stale ack stopped the pipeline: nothing past what was already in
        # flight (at most 4 batches) was sent before reading again from the cursor.
        assert all(delivered.count(seq) == 1 for seq in range(17, 41))


async def test_pipeline_stop_confirms_and_acks_what_was_submitted(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(12)])
        sink = PipelinedSink()
        sink.gates = {0: anyio.Event()}
        worker = make_worker(journal, sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(sink.submitted) >= 2, sink)
            worker.stop()
            sink.gates[0].set()
        assert sink.confirmed == sink.submitted
        assert journal.cursor("s") == sink.submitted[-1][-1] < 12


async def test_count_sent_observes_each_latency_in_the_public_histogram(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(6)])
        records = await journal.read_after(0, 10)
    now = records[2].appended_at + 0.004  # the later records' latencies are clamped to 0
    latencies = [max(0.0, now - r.appended_at) for r in records]

    class At:
        def time(self) -> float:
            return now

    metrics = Metrics()
    SinkContext("s", journal, metrics, At()).count_sent(records)  # type: ignore[arg-type]
    samples = {
        (s.name, s.labels.get("le")): s.value
        for fam in metrics.registry.collect()
        if fam.name == "argbridge_delivery_latency_seconds"
        for s in fam.samples
        if s.labels.get("component") == "s"
    }
    assert samples[("argbridge_delivery_latency_seconds_count", None)] == len(records)
    assert samples[("argbridge_delivery_latency_seconds_sum", None)] == pytest.approx(
        sum(latencies)
    )
    for (name, le), value in samples.items():
        if name.endswith("_bucket"):
            assert le is not None
            assert value == len([v for v in latencies if v <= float(le)]), le


async def test_journal_records_decode_lazily_and_stay_immutable(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        events = [make_event(n, partitionkey="p") for n in range(3)]
        await journal.append_many(events)
        records = await journal.read("s", 10)
        assert [r.body for r in records] == [e.to_json() for e in events]
        assert [r.event for r in records] == events
        assert records == await journal.read_after(0, 10)
        with pytest.raises(AttributeError):
            records[0].seq = 5
        built = JournalRecord(1, events[0], 10, 0.0)
        assert built.body == events[0].to_json() and built.event is events[0]


async def test_partial_batches_take_the_plain_loop_full_ones_the_pipeline(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = PipelinedSink()
        worker = make_worker(journal, sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await journal.append_many([make_event(n) for n in range(3)])  # live: partial
            with anyio.fail_after(5):
                while journal.cursor("s") < 3:
                    await anyio.wait_all_tasks_blocked()
            assert sink.serial == [[1, 2, 3]]
            await journal.append_many([make_event(n) for n in range(3, 13)])  # a backlog
            with anyio.fail_after(5):
                while journal.cursor("s") < 13:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()
        assert sink.confirmed == [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13]]
        assert sink.serial == [[1, 2, 3]]  # the backlog went through submit() alone


async def test_batches_are_bounded_in_bytes_too(tmp_path: Path):
    """Issue 17 item 2: what the worker reads (and then builds and hands over) is
    bounded in bytes, not only in events; an event larger than the bound goes alone."""
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n, size=10_000) for n in range(7)])
        await journal.append(make_event(7, size=50_000))
        await journal.append(make_event(8))
        sink = ScriptedSink()
        ctx = SinkContext("s", journal, Metrics(), NoSleepClock())
        worker = SinkWorker(sink, ctx, Router([], ["s"]), batch_size=100, batch_bytes=25_000)
        await run_until_caught_up(worker, journal, "s")
        sizes = [r.size for r in await journal.read_after(0, 100)]
        assert all(10_000 < s < 12_500 for s in sizes[:7])  # two fit in 25,000, not three
        assert [len(b) for b in sink.delivered] == [2, 2, 2, 1, 1, 1]


async def test_pipelined_batches_are_bounded_in_bytes(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n, size=10_000) for n in range(9)])
        sink = PipelinedSink()
        ctx = SinkContext("s", journal, Metrics(), NoSleepClock())
        worker = SinkWorker(sink, ctx, Router([], ["s"]), batch_size=100, batch_bytes=25_000)
        await run_until_caught_up(worker, journal, "s")
        assert sink.submitted == [[1, 2], [3, 4], [5, 6], [7, 8], [9]]
        assert sink.serial == []  # a batch full by bytes is a backlog: pipelined


async def test_linger_gathers_the_next_events_into_one_batch(tmp_path: Path):
    """Issue 17 item 6: once caught up, a new event waits ``linger`` for the ones right
    behind it, so they share one delivery and one cursor commit."""
    from tests.support.manual_clock import ManualClock

    clock = ManualClock()
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = ScriptedSink()
        ctx = SinkContext("s", journal, Metrics(), clock)
        worker = SinkWorker(sink, ctx, Router([], ["s"]), batch_size=10, linger=0.005)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await journal.append(make_event(1))
            with anyio.fail_after(5):
                await clock.wait_sleeping()  # woken by event 1, lingering
            assert clock.pending == [pytest.approx(0.005)] and sink.delivered == []
            await journal.append_many([make_event(2), make_event(3)])
            clock.advance(0.005)
            with anyio.fail_after(5):
                while journal.cursor("s") < 3:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()
        assert sink.delivered == [[make_event(n).id for n in (1, 2, 3)]]


# -- optional capabilities: declared types, tested with isinstance --------------------

WHSEC = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXh4eA=="
CAPABILITIES = (Background, Pipelined, ReportsSent, Wakeable, SelfDisabling, Resumable)


@pytest.mark.parametrize(
    ("config", "declared"),
    [
        ({"type": "file"}, set()),
        (
            {"type": "kafka", "bootstrap_servers": "127.0.0.1:9"},
            {Background, Pipelined, ReportsSent, Wakeable, Resumable},
        ),
        (
            {
                "type": "kafka",
                "bootstrap_servers": "127.0.0.1:9",
                "delivery": "exactly-once",
            },
            {Background, Pipelined, ReportsSent, Wakeable, Resumable},
        ),
        (
            {"type": "webhook", "url": "https://example.com/hook", "secrets": [WHSEC]},
            {Background, ReportsSent, Wakeable, SelfDisabling},
        ),
        (
            {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T/B/x"},
            {Background, ReportsSent, Wakeable},
        ),
    ],
    ids=["file", "kafka", "kafka-exactly-once", "webhook", "slack"],
)
async def test_each_sink_declares_its_optional_capabilities(
    tmp_path: Path, config: dict[str, object], declared: set[type]
):
    s = settings(tmp_path, sinks={"s": config})
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = build_sink(s.sinks["s"], SinkContext("s", journal, Metrics()), s)
        assert {c for c in CAPABILITIES if isinstance(sink, c)} == declared
        await sink.aclose()


async def test_the_worker_runs_a_background_sink_s_background_beside_delivery(tmp_path: Path):
    class BackgroundSink(ScriptedSink):
        def __init__(self) -> None:
            super().__init__()
            self.running = anyio.Event()
            self.ended = anyio.Event()

        async def background(self) -> None:
            self.running.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.ended.set()

    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(3)])
        sink = BackgroundSink()
        worker = make_worker(journal, sink)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await sink.running.wait()
                await worker.caught_up()
                worker.stop()
        assert sink.ended.is_set()  # cancelled with the worker
        assert [i for b in sink.delivered for i in b] == [make_event(n).id for n in range(3)]


@pytest.mark.parametrize("pipelined", [False, True])
async def test_a_sink_that_reports_sent_is_not_counted_again_by_the_worker(
    tmp_path: Path, pipelined: bool
):
    class Counting(PipelinedSink if pipelined else ScriptedSink):  # type: ignore[misc]
        reports_sent: Literal[True] = True

    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        await journal.append_many([make_event(n) for n in range(8)])
        sink = Counting()
        assert isinstance(sink, ReportsSent) and isinstance(sink, Pipelined) is pipelined
        metrics = Metrics()
        await run_until_caught_up(make_worker(journal, sink, metrics=metrics), journal, "s")
        assert journal.cursor("s") == 8
        assert count(metrics, SENT) == 0


async def test_delivering_returns_once_a_batch_is_handed_to_the_sink(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = ScriptedSink()
        sink.gate = anyio.Event()
        worker = make_worker(journal, sink)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await journal.append_many([make_event(n) for n in range(3)])
                await worker.delivering()
                assert worker.in_flight == 3 and sink.entered.is_set()
                await worker.delivering()  # one is in flight: at once
                sink.gate.set()
                await worker.caught_up()
                assert worker.in_flight == 0
                worker.stop()


async def test_only_the_exactly_once_kafka_sink_gets_the_exactly_once_role(tmp_path: Path):
    kafka = {"type": "kafka", "bootstrap_servers": "127.0.0.1:9"}
    s = settings(
        tmp_path,
        sinks={"eos": {**kafka, "delivery": "exactly-once"}, "alo": kafka, "f": {"type": "file"}},
    )
    async with Journal(tmp_path / "j.db", sinks=list(s.sinks)) as journal:
        roles = {n: sink_journal(c, journal) for n, c in s.sinks.items()}
        assert {n for n, r in roles.items() if isinstance(r, ExactlyOnceSinkJournal)} == {"eos"}
        with pytest.raises(TypeError, match="exactly-once sink role"):
            build_sink(s.sinks["eos"], SinkContext("eos", roles["alo"], Metrics()), s)
        sink = build_sink(s.sinks["eos"], SinkContext("eos", roles["eos"], Metrics()), s)
        await sink.aclose()


async def test_linger_after_a_partial_batch_when_more_came_in_meanwhile(tmp_path: Path):
    """Issue 17 item 6: events that arrive while a partial batch is delivered wait
    ``linger`` for the ones behind them too, instead of going out as a batch of one."""
    from tests.support.manual_clock import ManualClock

    clock = ManualClock()
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = ScriptedSink()
        sink.gate = gate = anyio.Event()
        ctx = SinkContext("s", journal, Metrics(), clock)
        worker = SinkWorker(sink, ctx, Router([], ["s"]), batch_size=10, linger=0.005)
        async with anyio.create_task_group() as tg:
            await journal.append(make_event(1))
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await sink.entered.wait()  # batch [1] is being delivered
            await journal.append(make_event(2))  # arrives during that delivery
            gate.set()
            with anyio.fail_after(5):
                await clock.wait_sleeping()  # batch [1] delivered, lingering for more
            assert clock.pending == [pytest.approx(0.005)]
            with anyio.fail_after(5):  # its ack commits in the background meanwhile
                while journal.cursor("s") < 1:
                    await anyio.wait_all_tasks_blocked()
            assert clock.pending == [pytest.approx(0.005)]
            await journal.append(make_event(3))
            clock.advance(0.005)
            with anyio.fail_after(5):
                while journal.cursor("s") < 3:
                    await anyio.wait_all_tasks_blocked()
            worker.stop()
        assert sink.delivered == [[make_event(n).id for n in ns] for ns in ((1,), (2, 3))]


async def test_the_next_batch_is_delivered_while_the_last_ack_commits(tmp_path: Path):
    """Live traffic does not wait for the cursor: the ack of a batch commits in the
    background (with the next appends, under a group linger) while the worker reads
    past it and delivers the next one; the cursor catches up, in order, before the
    worker reports itself caught up or stops."""
    from tests.sinks.test_acker import GatedAcks

    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        gated = GatedAcks(journal)
        sink = ScriptedSink()
        worker = SinkWorker(sink, SinkContext("s", gated, Metrics()), Router([], ["s"]))
        async with anyio.create_task_group() as tg:
            await journal.append(make_event(1))
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await gated.waiting.wait()  # batch [1] delivered, its ack on its way
            await journal.append(make_event(2))
            with anyio.fail_after(5):
                while len(sink.delivered) < 2:
                    await anyio.wait_all_tasks_blocked()
            assert sink.delivered == [[make_event(n).id] for n in (1, 2)]
            assert journal.cursor("s") == 0  # neither ack committed yet
            gated.gate.set()
            with anyio.fail_after(5):
                await worker.caught_up()
            assert journal.cursor("s") == 2 and [s for s, _ in gated.acks] == [1, 2]
            worker.stop()
