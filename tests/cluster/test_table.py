"""What an owner does with its partitions' records (pure)."""

from __future__ import annotations

from dataclasses import replace

from argbridge.cluster.records import (
    Hint,
    Newer,
    RunId,
    RunRecord,
    Tombstone,
    Unreadable,
    decode,
    encode_hint,
    encode_record,
    new_hint,
)
from argbridge.cluster.table import Latest, PartitionTable

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


def _messages() -> list[tuple[int, bytes | None, bytes | None]]:
    """A partition's history as (offset, key, value) literals: positions recorded over and
    over, hints and their tombstones, a refusal, a forced retry, a newer record, a deleted
    record and an unreadable value."""
    a, b = b"run/arga/validation/a", b"run/arga/demo/b"
    c = b"run/arga/validation/c"
    ha, hb = b"hint/arga/validation/a/i-1", b"hint/arga/demo/b/i-2"
    hc = b"hint/arga/validation/c/i-3"

    def record(run: RunId, **fields: object) -> bytes:
        return encode_record(replace(RunRecord(run), **fields))  # type: ignore[arg-type]

    out: list[tuple[bytes | None, bytes | None]] = [
        (ha, encode_hint(Hint(A, "discovery", "i-1", 1.0))),
        (a, record(A, origin="discovery", owner="x")),
        (ha, None),
        *[(a, record(A, position=str(n), owner="x")) for n in range(50)],
        (hb, encode_hint(Hint(B, "config", "i-2", 2.0))),
        (b, record(B, status="refused", detail="HTTP 403", position="7")),
        (hb, None),
        (hb, encode_hint(Hint(B, "control", "i-2", 3.0, force=True))),
        (hc, encode_hint(Hint(RunId("arga", "validation", "c"), "discovery", "i-3", 4.0))),
        (c, b'{"v": 2, "type": "run"}'),
        (b"run/arga/validation/d", record(RunId("arga", "validation", "d"))),
        (b"run/arga/validation/d", None),
        (b"run/arga/validation/e", b"not json"),
        *[(a, record(A, position=str(n), owner="x")) for n in range(50, 60)],
    ]
    return [(offset, key, value) for offset, (key, value) in enumerate(out)]


def test_the_newest_value_of_each_key_builds_the_same_table_as_every_message() -> None:
    """A re-read keeps only each key's newest message (what compaction leaves): the table
    and the owner's plan are the same as after applying every message in order."""
    messages = _messages()
    every = PartitionTable()
    for offset, key, value in messages:
        every.apply(offset, decode(key, value))
    latest = Latest()
    for offset, key, value in messages:
        latest.add(offset, key, value)
    assert latest.read == len(messages) and len(latest) == 8
    kept = latest.drain()
    assert [o for o, _, _ in kept] == sorted(o for o, _, _ in kept) and len(latest) == 0
    compacted = PartitionTable()
    for offset, key, value in kept:
        compacted.apply(offset, decode(key, value))
    newest = compacted.entries["run/arga/validation/a"].record
    assert newest is not None and newest.position == "59"

    def state(t: PartitionTable) -> dict[str, tuple[object, ...]]:
        # A deleted record leaves an empty entry behind when every message is applied.
        return {
            k: (e.record, sorted(e.hints), e.newer)
            for k, e in t.entries.items()
            if e.record is not None or e.hints or e.newer
        }

    assert state(compacted) == state(every) and len(state(every)) == 3
    assert compacted.unreadable == every.unreadable == 1

    def steps(t: PartitionTable) -> tuple[list[str], list[str], list[str]]:
        plan = t.plan(None, owner="me", now=9.0)  # the same steps, perhaps in another order
        return (
            sorted(repr(r) for r in plan.write),
            sorted(repr(r) for r in plan.follow),
            sorted(plan.drop),
        )

    assert steps(compacted) == steps(every)
    plan = compacted.plan(None, owner="me", now=9.0)
    assert sorted(r.run.id for r in plan.follow) == ["a", "b"]  # b: the newer forced hint


def test_an_older_value_than_the_one_applied_is_ignored() -> None:
    """The owner applies its own writes as Kafka acks them; its consumer reads the
    messages before them later: a finished run is not followed again from a stale
    ``following`` record, nor brought back by its older values after its deletion."""
    t = PartitionTable()
    t.apply(7, RunRecord(A, status="done", position="9"))  # our own write, acked
    assert t.apply(5, RunRecord(A, position="8")) is None  # read afterwards: older
    assert t.apply(6, Tombstone("run/arga/validation/a", False)) is None
    assert t.apply(4, Newer("run/arga/validation/a", 2)) is None
    assert not t.plan(None, owner="me", now=1).follow
    t.apply(9, Tombstone("run/arga/validation/a", False))  # deleted (a finished run)
    assert t.apply(8, RunRecord(A, position="9")) is None
    assert t.entries["run/arga/validation/a"].record is None
    assert not t.plan(None, owner="me", now=1)
    assert t.apply(10, RunRecord(A, status="following")) == "run/arga/validation/a"


def test_done_records_expire_after_their_grace_unless_from_the_config() -> None:
    """A finished run's record is deleted once its grace is over (a discovery listing that
    lags behind the run's end meets it meanwhile); refusals, runs still followed, config
    runs (asked for again at every start) and runs with a waiting hint stay."""
    t = PartitionTable()
    c, d, e, f = (RunId("arga", "validation", x) for x in "cdef")
    done = RunRecord(A, status="done", origin="discovery", at=100.0)
    t.apply(0, done)
    t.apply(1, RunRecord(B, status="refused", origin="discovery", at=100.0))
    t.apply(2, RunRecord(c, status="following", origin="discovery", at=100.0))
    t.apply(3, RunRecord(d, status="done", origin="config", at=100.0))
    t.apply(4, RunRecord(e, status="done", origin="control", at=100.0))
    t.apply(5, Hint(e, "control", "i-1", 120.0, force=True))  # argbridge follow: a retry
    t.apply(6, RunRecord(f, status="done", origin="url-run", at=150.0))
    assert t.expired(159.0, 60.0) == []
    assert t.expired(160.0, 60.0) == [done]
    assert t.expired(210.0, 60.0) == [done] + [r for r in t.records() if r.run == f]
    t.apply(7, Tombstone(done.key, False))
    assert [r.run for r in t.expired(1000.0, 60.0)] == [f]


def test_a_forced_hint_survives_the_tombstone_of_an_earlier_hint_of_its_instance() -> None:
    """The race the three-message batch showed: an instance's plain hint (from its config)
    is handled and its tombstone written; meanwhile ``argbridge follow`` on the same
    instance sends a forced hint; the owner reads the forced hint and that tombstone
    together. Under one key the tombstone deleted the forced hint before it was planned."""
    t = PartitionTable()
    t.apply(0, RunRecord(A, status="not_found", owner="i-1"))
    plain = new_hint(A, "config", "i-2", 1.0)
    t.apply(1, plain)
    assert t.plan(None, owner="i-2", now=2.0).drop == (plain.key,)
    forced = new_hint(A, "control", "i-2", 3.0, force=True)
    assert forced.key != plain.key and decode(forced.key.encode(), encode_hint(forced)) == forced
    t.apply(2, forced)
    t.apply(3, decode(plain.key.encode(), None))  # the plain hint's tombstone
    plan = t.plan(None, owner="i-2", now=4.0)
    assert plan.write == (RunRecord(A, status="following", owner="i-2", at=4.0),)
    assert plan.follow == plan.write
    assert plan.drop == (forced.key,)
    assert new_hint(A, "discovery", "i-2", 5.0).key == plain.key  # plain repeats: one key
