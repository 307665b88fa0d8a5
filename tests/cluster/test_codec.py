"""The events topic's records decode back to the CloudEvents the Kafka sink encoded."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from argbridge.cluster.codec import RecordError, decode_event, header
from argbridge.delivery.kafka_records import binary_parts, build_record
from argbridge.events import CloudEvent
from argbridge.journal.records import encode_event


def event(**kw: Any) -> CloudEvent:
    base: dict[str, Any] = {
        "id": "e-1",
        "source": "urn:arga:runs/r1",
        "type": "arga.validation.run.failed",
        "subject": "runs/r1",
        "time": "2026-01-02T03:04:05.678Z",
        "data": {"status": "failed", "n": 1, "text": "é ✓"},
        "partitionkey": "r1",
        "sequence": 7,
        "severity": "high",
        "extensions": {"traceparent": "00-ab-cd-01", "region": "eu"},
    }
    base.update(kw)
    return CloudEvent(**base)


def test_binary_mode_round_trips():
    ev = event()
    record = build_record(ev, "t")
    assert decode_event(record.headers, record.value) == ev


def test_the_journal_hot_path_encoding_round_trips():
    ev = event()
    attrs_json, data_json = encode_event(ev)
    _, value, headers, _ = binary_parts(orjson.loads(attrs_json), data_json)
    assert decode_event(headers, value) == ev


def test_structured_mode_round_trips():
    ev = event()
    record = build_record(ev, "t", mode="structured")
    assert decode_event(record.headers, record.value) == ev


def test_no_data_and_no_content_type():
    ev = event(data=None, datacontenttype=None)
    record = build_record(ev, "t")
    assert record.value == b""
    assert decode_event(record.headers, record.value) == ev
    assert decode_event(record.headers, None) == ev


def test_typed_extensions_come_back_as_their_text():
    ev = event(extensions={"flag": True, "count": 3})
    record = build_record(ev, "t")
    got = decode_event(record.headers, record.value)
    assert got.extensions == {"flag": "true", "count": "3"}
    assert got.sequence == 7


@pytest.mark.parametrize(
    ("headers", "value", "why"),
    [
        ([], b"{}", "no ce_specversion"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"x")], b"", "not a valid CloudEvent"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"\xff")], b"", "not UTF-8"),
        (build_record(event(), "t").headers, b"{not json", "not JSON data"),
        ([("content-type", b"application/cloudevents+json")], b"[1]", "structured"),
        ([("content-type", b"application/cloudevents+json")], b"{x", "structured"),
    ],
)
def test_unreadable_records_are_named(headers, value, why):
    with pytest.raises(RecordError, match=why):
        decode_event(headers, value)


def test_header_takes_the_last_value():
    assert header([("a", b"1"), ("a", b"2")], "a") == b"2"
    assert header([("a", b"1")], "b") is None
