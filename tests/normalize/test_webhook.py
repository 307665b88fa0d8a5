"""Generic inbound webhooks → CloudEvents with a configured type."""

from __future__ import annotations

import pytest

from argbridge.events import CloudEvent, deterministic_id
from argbridge.normalize.webhook import WebhookShapeError, generic_event


def test_generic_event():
    body = {"ref": "main", "n": 1}
    ev = generic_event(
        "gh", body, delivery_id="guid", ce_type="com.github.push", subject_field="ref", now=0
    )
    assert ev.id == deterministic_id("gh", "guid")
    assert ev.type == "com.github.push"
    assert ev.source == "urn:argbridge:webhook:gh"
    assert ev.subject == ev.partitionkey == "main"
    assert ev.time == "1970-01-01T00:00:00.000Z"
    assert ev.data == {"delivery_id": "guid", "upstream": body}
    assert CloudEvent.from_json(ev.to_json()) == ev


@pytest.mark.parametrize("value", [None, "", True, {"a": 1}])
def test_subject_only_from_scalar(value):
    ev = generic_event("s", {"k": value}, delivery_id="d", ce_type="t", subject_field="k")
    assert ev.subject is None and ev.partitionkey is None


@pytest.mark.parametrize("body", [[], "x", 1, None])
def test_non_object_is_a_shape_error(body):
    with pytest.raises(WebhookShapeError):
        generic_event("s", body, delivery_id="d", ce_type="t")


def test_custom_source():
    ev = generic_event("s", {}, delivery_id="d", ce_type="t", ce_source="urn:tool")
    assert ev.source == "urn:tool"
