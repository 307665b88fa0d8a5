"""A run's lease: positions reach the record only once the events topic acked them."""

from __future__ import annotations

import anyio

from argbridge.cluster.lease import RunLease, record_status
from argbridge.cluster.records import RunId, RunRecord
from tests.support.events_acked import FakeEventsAcked
from tests.support.manual_clock import ManualClock

RUN = RunId("arga", "validation", "r")


class Writer:
    instance_id = "me"

    def __init__(self) -> None:
        self.records: list[RunRecord] = []
        self.released: list[str] = []
        self.owned = True
        self.wrote = anyio.Event()

    async def write(self, record: RunRecord) -> bool:
        if not self.owned:
            return False
        self.records.append(record)
        self.wrote.set()
        self.wrote = anyio.Event()
        return True

    def finished(self, key: str) -> None:
        self.released.append(key)


async def test_position_waits_for_the_events_ack() -> None:
    seq = 10
    acked, writer, clock = FakeEventsAcked(), Writer(), ManualClock()
    lease = RunLease(RunRecord(RUN, position="3"), writer, acked, lambda: seq, clock)
    assert await lease.get_state("any") == "3"  # the resume point is the record's
    async with anyio.create_task_group() as tg:
        tg.start_soon(lease.run)
        await lease.set_state("k", "7")  # events up to journal seq 10 committed locally
        acked.ack(9)
        await anyio.wait_all_tasks_blocked()
        assert writer.records == []  # seq 10 is not acked yet: nothing recorded
        seq = 12
        await lease.set_state("k", "8")  # a newer position meanwhile (needs seq 12)
        wrote = writer.wrote
        acked.ack(10)
        with anyio.fail_after(5):
            await wrote.wait()
        assert [r.position for r in writer.records] == ["7"]
        wrote = writer.wrote
        await clock.advance_to_next()  # min_interval between two writes
        acked.ack(12)
        with anyio.fail_after(5):
            await wrote.wait()
        assert [r.position for r in writer.records] == ["7", "8"]
        assert writer.records[-1].owner == "me" and lease.recorded == 2
        tg.cancel_scope.cancel()


async def test_finish_records_the_last_acked_position_then_the_status() -> None:
    acked, writer, clock = FakeEventsAcked(100), Writer(), ManualClock()
    lease = RunLease(RunRecord(RUN), writer, acked, lambda: 50, clock)
    await lease.set_state("k", "9")
    await lease.finish("auth_failed", "HTTP 403")
    assert [(r.status, r.position) for r in writer.records] == [
        ("following", "9"),
        ("refused", "9"),
    ]
    assert writer.records[-1].detail == "HTTP 403"
    assert writer.released == ["run/arga/validation/r"]


async def test_done_is_recorded_once_everything_journaled_is_acked() -> None:
    """A ``done`` record may be deleted later: it is written only once the events topic
    has what the journal holds, the run's last events included (until then the record
    says ``following``, and a new owner would resume the run)."""
    acked, writer, clock = FakeEventsAcked(40), Writer(), ManualClock()
    record = RunRecord(RUN, origin="discovery", position="8")
    lease = RunLease(record, writer, acked, lambda: 50, clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lease.finish, "done")
        await anyio.wait_all_tasks_blocked()
        assert writer.records == []  # seq 50 not acked yet
        acked.ack(50)
    assert [(r.status, r.position) for r in writer.records] == [("done", "8")]
    assert lease.record.status == "done" and writer.released == [lease.key]


async def test_a_lost_run_writes_nothing() -> None:
    acked, writer, clock = FakeEventsAcked(100), Writer(), ManualClock()
    writer.owned = False
    lease = RunLease(RunRecord(RUN, position="1"), writer, acked, lambda: 5, clock)
    await lease.set_state("k", "2")
    await lease.finish("done")
    assert writer.records == [] and lease.record.position == "1"


def test_record_statuses() -> None:
    assert record_status("done") == "done"
    assert record_status("auth_failed") == "refused"
    assert record_status("not_found") == "not_found"
    assert record_status("bad_content_type") == "stopped:bad_content_type"
