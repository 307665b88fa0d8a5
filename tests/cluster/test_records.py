"""The control topic's records on literals: encoding, versions, keys, partitions."""

from __future__ import annotations

import pytest

from argbridge.cluster.records import (
    SCHEMA_VERSION,
    Hint,
    Newer,
    RecordError,
    RunId,
    RunRecord,
    Tombstone,
    Unreadable,
    decode,
    encode_hint,
    encode_record,
    partition_of,
)

RUN = RunId("arga", "validation", "run-1")


def test_record_round_trip() -> None:
    record = RunRecord(RUN, origin="discovery", position="17", owner="i-1", at=12.5)
    value = encode_record(record)
    assert value.startswith(b'{"v":1,"type":"run"')
    assert decode(b"run/arga/validation/run-1", value) == record


def test_hint_round_trip() -> None:
    hint = Hint(RUN, "control", "i-2", 3.0, force=True)
    assert hint.key == "hint/arga/validation/run-1/i-2"
    assert decode(hint.key.encode(), encode_hint(hint)) == hint


def test_literal_record_of_version_1() -> None:
    raw = (
        b'{"v":1,"type":"run","source":"arga","stream":"demo","id":"d-1","status":"refused",'
        b'"detail":"HTTP 403","position":null,"owner":"i-9","at":1,"later_field":[1,2]}'
    )
    item = decode(b"run/arga/demo/d-1", raw)
    assert isinstance(item, RunRecord)
    assert item.status == "refused" and not item.active and item.detail == "HTTP 403"


def test_a_newer_version_is_not_misread() -> None:
    raw = b'{"v":2,"type":"run","source":"arga","stream":"validation","id":"run-1","state":"x"}'
    assert decode(b"run/arga/validation/run-1", raw) == Newer("run/arga/validation/run-1", 2)
    assert SCHEMA_VERSION == 1


def test_tombstones() -> None:
    assert decode(b"run/arga/validation/run-1", None) == Tombstone(
        "run/arga/validation/run-1", hint=False
    )
    assert decode(b"hint/arga/validation/run-1/i", None) == Tombstone(
        "hint/arga/validation/run-1/i", hint=True
    )


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"run/a/validation/r", b"not json", "value is not JSON"),
        (b"run/a/validation/r", b"[1]", "value is not a JSON object"),
        (b"run/a/validation/r", b'{"type":"run"}', "no schema version 'v'"),
        (b"run/a/validation/r", b'{"v":true,"type":"run"}', "no schema version 'v'"),
        (
            b"run/a/validation/r",
            b'{"v":1,"type":"run","source":"a","stream":"ftp","id":"r","status":"x"}',
            "unknown stream kind 'ftp'",
        ),
        (
            b"run/a/validation/OTHER",
            b'{"v":1,"type":"run","source":"a","stream":"validation","id":"r","status":"x"}',
            "does not match",
        ),
        (
            b"run/a/validation/r",
            b'{"v":1,"type":"run","source":"a","stream":"validation","id":"r","status":"x",'
            b'"position":5}',
            "'position' must be a string or null",
        ),
        (
            b"run/a/validation/r",
            b'{"v":1,"type":"what","source":"a","stream":"validation","id":"r"}',
            "unknown record type",
        ),
        (b"\xff", b"{}", "key is not UTF-8"),
    ],
)
def test_unreadable(key: bytes, value: bytes, reason: str) -> None:
    item = decode(key, value)
    assert isinstance(item, Unreadable)
    assert reason in item.reason


def test_ids_are_path_segments() -> None:
    with pytest.raises(RecordError, match="without '/'"):
        RunId("arga", "validation", "a/b")
    with pytest.raises(RecordError, match="non-empty"):
        RunId("", "validation", "a")


def test_partition_is_stable_and_shared_by_record_and_hints() -> None:
    # crc32 of the record key: the same on every instance, version and restart.
    assert partition_of(RUN, 12) == partition_of(RunId("arga", "validation", "run-1"), 12)
    spread = {partition_of(RunId("arga", "validation", f"r{n}"), 12) for n in range(200)}
    assert spread == set(range(12))


def test_statuses() -> None:
    assert RunRecord(RUN).active
    for status in ("done", "refused", "not_found", "stopped:http_500"):
        assert not RunRecord(RUN, status=status).active
    long = RunRecord(RUN).with_status("refused", "x" * 2000, owner="i", at=1)
    assert len(long.detail) == 500
