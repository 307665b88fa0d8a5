"""What an owner does with its partitions' records (pure)."""

from __future__ import annotations

from argbridge.cluster.records import Hint, Newer, RunId, RunRecord, Tombstone, Unreadable
from argbridge.cluster.table import PartitionTable

A = RunId("arga", "validation", "a")
B = RunId("arga", "demo", "b")


def test_hints_become_records_then_are_dropped() -> None:
    t = PartitionTable()
    t.apply(0, Hint(A, "discovery", "i-1", 1.0))
    t.apply(1, Hint(A, "config", "i-2", 2.0))
    plan = t.plan(None, owner="me", now=5.0)
    assert plan.write == (RunRecord(A, origin="discovery", owner="me", at=5.0),)
    assert plan.follow == plan.write
    assert sorted(plan.drop) == ["hint/arga/validation/a/i-1", "hint/arga/validation/a/i-2"]


def test_a_hint_never_overwrites_a_record() -> None:
    t = PartitionTable()
    record = RunRecord(A, position="42", owner="old")
    t.apply(0, record)
    t.apply(1, Hint(A, "discovery", "i-1"))
    plan = t.plan(None, owner="me", now=5.0)
    assert plan.write == ()
    assert plan.follow == (record,)  # from its position
    assert plan.drop == ("hint/arga/validation/a/i-1",)


def test_refused_runs_are_not_retried_but_a_newer_forced_hint_retries() -> None:
    t = PartitionTable()
    t.apply(0, Hint(A, "control", "i-1", force=True))  # older than the refusal
    t.apply(1, RunRecord(A, status="refused", detail="HTTP 403", position="3"))
    assert t.plan(None, owner="me", now=1).follow == ()
    t.apply(2, Hint(A, "discovery", "i-1"))
    assert t.plan(None, owner="me", now=1).follow == ()
    t.apply(3, Hint(A, "control", "i-2", force=True))
    plan = t.plan(None, owner="me", now=9.0)
    assert [r.status for r in plan.write] == ["following"]
    assert plan.write[0].position == "3" and plan.follow == plan.write


def test_newer_records_are_left_alone() -> None:
    t = PartitionTable()
    t.apply(0, Newer("run/arga/validation/a", 2))
    t.apply(1, Hint(A, "discovery", "i-1"))
    assert not t.plan(None, owner="me", now=1)
    assert t.newer == 1
    t.apply(2, Unreadable("x", "value is not JSON"))
    assert t.unreadable == 1


def test_tombstones_and_touched_keys() -> None:
    t = PartitionTable()
    t.apply(0, RunRecord(A))
    t.apply(1, RunRecord(B, status="done"))
    assert t.plan(["run/arga/demo/b"], owner="me", now=1).follow == ()
    t.apply(2, Hint(B, "x", "i-1"))
    assert t.apply(3, Tombstone("hint/arga/demo/b/i-1", hint=True)) == "run/arga/demo/b"
    assert t.entries["run/arga/demo/b"].hints == {}
    t.apply(4, Tombstone("run/arga/validation/a", hint=False))
    assert t.records() == [RunRecord(B, status="done")]
