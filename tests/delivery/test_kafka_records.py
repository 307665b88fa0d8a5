from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from cloudevents.core.bindings import kafka as ce_kafka
from hypothesis import given
from hypothesis import strategies as st

from argbridge.delivery.kafka_records import (
    STRUCTURED_CONTENT_TYPE,
    KafkaRecord,
    binary_parts,
    build_record,
    choose_partition,
    partition_for,
    render_topic,
    template_fields,
)
from argbridge.errors import EventError
from argbridge.events import CloudEvent
from argbridge.journal import JournalRecord
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
        "extensions": {"traceparent": "00-ab-cd-01", "flag": True},
    }
    base.update(kw)
    return CloudEvent(**base)


def message(record: KafkaRecord) -> ce_kafka.KafkaMessage:
    return ce_kafka.KafkaMessage(
        headers=dict(record.headers),
        key=record.key.decode() if record.key is not None else None,
        value=record.value,
    )


def test_binary_mode_decodes_with_the_cloudevents_binding():
    ev = event()
    record = build_record(ev, "t")
    assert record.key == b"r1"
    assert record.value == orjson.dumps(ev.data)
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/json"
    assert headers["ce_id"] == b"e-1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_partitionkey"] == b"r1"  # the key mapper must not remove it
    assert headers["ce_flag"] == b"true"
    assert "ce_datacontenttype" not in headers
    decoded = ce_kafka.from_kafka_event(message(record))
    attrs = decoded.get_attributes()
    assert attrs["id"] == "e-1"
    assert attrs["type"] == ev.type
    assert attrs["source"] == ev.source
    assert attrs["subject"] == "runs/r1"
    assert attrs["partitionkey"] == "r1"
    assert attrs["sequence"] == "7"
    assert attrs["severity"] == "high"
    assert attrs["traceparent"] == "00-ab-cd-01"
    assert decoded.get_data() == ev.data


def test_structured_mode_decodes_and_round_trips():
    ev = event()
    record = build_record(ev, "t", "structured")
    # The event is the body; the W3C trace header is forwarded for tracing libraries.
    assert dict(record.headers) == {
        "content-type": STRUCTURED_CONTENT_TYPE,
        "traceparent": b"00-ab-cd-01",
    }
    assert record.key == b"r1"
    assert CloudEvent.from_json(record.value) == ev
    decoded = ce_kafka.from_kafka_event(message(record))
    assert decoded.get_attributes()["id"] == "e-1"
    assert decoded.get_data() == ev.data


def test_no_partitionkey_means_no_key_and_no_data_means_empty_value():
    record = build_record(event(partitionkey=None, data=None), "t")
    assert record.key is None
    assert record.value == b""


def test_topic_templates():
    ev = event()
    assert render_topic("argbridge.events", ev) == "argbridge.events"
    assert render_topic("ab.{type}", ev) == "ab.arga.validation.run.failed"
    assert render_topic("ab.{source}", ev) == "ab.urn_arga_runs_r1"
    assert render_topic("sev-{severity}-{missing}", ev) == "sev-high-none"
    assert render_topic("x.{traceparent}", ev) == "x.00-ab-cd-01"
    assert len(render_topic("{type}" * 20, ev)) == 249
    with pytest.raises(ValueError):
        template_fields("a.{type!r}")
    with pytest.raises(ValueError):
        template_fields("a.{}")
    with pytest.raises(EventError):
        render_topic("{subject}", event(subject="."))


@given(st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_partition_matches_the_default_partitioner(key, n):
    partitions = list(range(n))
    assert choose_partition(key, partitions, "id") == DefaultPartitioner()(
        key, partitions, partitions
    )
    # The sink's path (partitions sorted once per topic) picks the same partition.
    shuffled = partitions[::-1]
    assert partition_for(key, partitions, "id") == choose_partition(key, shuffled, "id")


def test_keyless_events_always_land_on_the_same_partition():
    parts = [3, 0, 2, 1]
    first = choose_partition(None, parts, "event-42")
    assert all(choose_partition(None, parts, "event-42") == first for _ in range(5))
    with pytest.raises(ValueError):
        choose_partition(b"k", [], "x")


_text = st.text(min_size=1, max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    data=_json,
    subject=st.none() | _text,
    partitionkey=st.none() | _text,
    sequence=st.none() | st.integers(0, 2**40),
    contenttype=st.none() | st.just("application/json"),
    extensions=st.dictionaries(
        st.sampled_from(["traceparent", "flag", "n", "x1"]),
        st.booleans() | st.integers(-5, 5) | _text,
        max_size=3,
    ),
)
def test_binary_parts_from_the_stored_parts_equal_build_record(
    data, subject, partitionkey, sequence, contenttype, extensions
):
    e = CloudEvent(
        id="e-1",
        source="urn:x",
        type="t",
        subject=subject,
        data=data,
        datacontenttype=contenttype,
        partitionkey=partitionkey,
        sequence=sequence,
        extensions=extensions,
    )
    expected = build_record(e, "topic")
    record = stored(e)
    key, value, headers, event_id = binary_parts(record.attributes, record.data_json)
    assert (key, value, headers, event_id) == (
        expected.key,
        expected.value,
        expected.headers,
        "e-1",
    )


def test_binary_parts_are_not_fooled_by_data_lookalikes_in_attributes():
    e = event(subject='x,"data":1', extensions={"traceparent": ',"data":{'}, data=[1, {"data": 2}])
    record = stored(e)
    expected = build_record(e, "t")
    assert binary_parts(record.attributes, record.data_json) == (
        expected.key,
        expected.value,
        expected.headers,
        e.id,
    )


def stored(e: CloudEvent) -> JournalRecord:
    """``e`` as the journal stores and reads it back."""
    return JournalRecord.stored(1, 0.0, *encode_event(e))


def test_caches_keyed_by_keys_and_extension_names_are_bounded():
    """Issue 17: the key hash memo and the header-name memo hold a bounded number of
    entries, however many distinct keys and extension names go through."""
    from argbridge.delivery import kafka_records

    hash_cache = kafka_records._hash
    limit = hash_cache.cache_info().maxsize
    assert limit is not None and limit <= 8192
    for n in range(limit + 500):
        partition_for(f"key-{n}".encode(), [0, 1, 2], "id")
    assert hash_cache.cache_info().currsize <= limit
    for n in range(kafka_records._MAX_HEADER_NAMES + 50):
        attrs = {"specversion": "1.0", "id": f"e{n}", "source": "s", "type": "t", f"x{n}": "v"}
        parts = binary_parts(attrs, b"")
        assert (f"ce_x{n}", b"v") in parts[2]
    assert len(kafka_records._HEADER_NAMES) <= kafka_records._MAX_HEADER_NAMES
