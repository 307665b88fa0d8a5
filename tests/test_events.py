"""CloudEvents validation, JSON round-trip and deterministic ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from argbridge.errors import EventError
from argbridge.events import ID_NAMESPACE, CloudEvent, deterministic_id, now_rfc3339


def base(**kw: Any) -> CloudEvent:
    args: dict[str, Any] = {"id": "1", "source": "urn:x", "type": "t"}
    args.update(kw)
    return CloudEvent(**args)


def test_minimal_event_has_spec_defaults():
    ev = base()
    assert ev.specversion == "1.0"
    assert ev.to_dict() == {
        "specversion": "1.0",
        "id": "1",
        "source": "urn:x",
        "type": "t",
        "datacontenttype": "application/json",
    }


@pytest.mark.parametrize("field", ["id", "source", "type"])
def test_required_attributes_must_be_non_empty(field):
    with pytest.raises(EventError, match=field):
        base(**{field: ""})


@pytest.mark.parametrize(
    "name",
    ["Upper", "with-dash", "under_score", "x" * 21, "", "data", "id", "time"],
)
def test_invalid_extension_names_are_rejected(name):
    with pytest.raises(EventError):
        base(extensions={name: "v"})


def test_valid_extensions_and_argbridge_extensions():
    ev = base(partitionkey="run-1", sequence=3, severity="P1", extensions={"traceparent2": "x"})
    attrs = ev.attributes()
    assert attrs["partitionkey"] == "run-1"
    assert attrs["sequence"] == 3
    assert attrs["severity"] == "P1"
    assert attrs["traceparent2"] == "x"


def test_known_extensions_cannot_be_repeated_in_extensions():
    with pytest.raises(EventError, match="own field"):
        base(extensions={"partitionkey": "x"})


@pytest.mark.parametrize("bad", ["yesterday", "2026-01-01", "2026-01-01 10:00:00Z"])
def test_time_must_be_rfc3339(bad):
    with pytest.raises(EventError, match="RFC 3339"):
        base(time=bad)


def test_sequence_must_be_an_integer():
    with pytest.raises(EventError, match="sequence"):
        base(sequence=True)
    with pytest.raises(EventError, match="sequence"):
        base(sequence="3")


def test_extension_values_must_be_scalar():
    with pytest.raises(EventError, match="string, integer or boolean"):
        base(extensions={"x": [1]})


def test_specversion_other_than_1_0_is_rejected():
    with pytest.raises(EventError, match="specversion"):
        CloudEvent.from_dict({"specversion": "0.3", "id": "1", "source": "s", "type": "t"})
    with pytest.raises(EventError, match="specversion is required"):
        CloudEvent.from_dict({"id": "1", "source": "s", "type": "t"})


def test_from_json_rejects_garbage():
    with pytest.raises(EventError, match="JSON"):
        CloudEvent.from_json(b"{nope")
    with pytest.raises(EventError, match="object"):
        CloudEvent.from_json(b"[1]")
    with pytest.raises(EventError, match="data_base64"):
        CloudEvent.from_dict(
            {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "AA=="}
        )


def test_round_trip_with_everything():
    ev = base(
        subject="run-1",
        time=now_rfc3339(0),
        data={"a": [1, 2, {"b": None}], "u": "é"},
        dataschema="https://example.com/schema",
        partitionkey="run-1",
        sequence=7,
        severity="high",
        extensions={"ext1": "x", "flag": True, "num": 3},
    )
    assert CloudEvent.from_json(ev.to_json()) == ev
    assert CloudEvent.from_trusted_json(ev.to_json()) == ev


def test_round_trip_without_datacontenttype_stays_without_it():
    ev = base(datacontenttype=None)
    assert "datacontenttype" not in ev.to_dict()
    assert CloudEvent.from_json(ev.to_json()) == ev
    assert CloudEvent.from_trusted_json(ev.to_json()) == ev


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    data=json_values,
    subject=st.none() | st.text(min_size=1),
    ext=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True).filter(
            lambda n: (
                n
                not in {
                    "id",
                    "source",
                    "type",
                    "subject",
                    "time",
                    "data",
                    "sequence",
                    "severity",
                    "partitionkey",
                    "dataschema",
                    "specversion",
                }
            )
        ),
        st.text() | st.integers(-(2**53), 2**53) | st.booleans(),
        max_size=3,
    ),
)
def test_round_trip_property(data, subject, ext):
    ev = base(subject=subject, data=data, extensions=ext)
    assert CloudEvent.from_json(ev.to_json()) == ev
    # The journal's decode (no re-validation) gives the very same event.
    assert CloudEvent.from_trusted_json(ev.to_json()) == ev


def test_deterministic_id_is_stable_and_separates_parts():
    a = deterministic_id("arga-results", "run-1", "7")
    assert a == deterministic_id("arga-results", "run-1", "7")
    assert a != deterministic_id("arga-results", "run-1", "8")
    assert deterministic_id("ab", "c") != deterministic_id("a", "bc")
    # The namespace is part of the contract: ids must never change between releases.
    assert deterministic_id("x") == "65cc1680-4048-5be0-b210-88d29c1f9b09"
    with pytest.raises(EventError):
        deterministic_id()


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=4))
def test_deterministic_id_is_uuid5_of_the_joined_parts(parts):
    # The fast implementation must give exactly the stdlib's UUIDv5, forever.
    expected = uuid.uuid5(ID_NAMESPACE, "\x1f".join(str(p) for p in parts))
    assert deterministic_id(*parts) == str(expected)


def test_trusted_json_still_rejects_what_to_json_never_writes():
    with pytest.raises(EventError):
        CloudEvent.from_trusted_json(b"not json")
    with pytest.raises(EventError):
        CloudEvent.from_trusted_json(b"[1]")
    with pytest.raises(EventError):
        CloudEvent.from_trusted_json(
            b'{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AA=="}'
        )
