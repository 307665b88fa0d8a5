"""Argus incident webhook bodies → ``argus.incident.<action>`` CloudEvents."""

from __future__ import annotations

from typing import Any

import pytest

from argbridge.events import CloudEvent, deterministic_id
from argbridge.normalize import argus
from argbridge.normalize.argus import (
    IncidentShapeError,
    incident_action,
    incident_event,
    incident_severity,
    similar_event,
)

INCIDENT: dict[str, Any] = {
    "id": "INC-2287",
    "title": "Checkout p99 latency",
    "severity": "P2",
    "status": "acknowledged",
    "service_id": "svc-checkout",
    "team_id": "team-pay",
    "auto_classified": True,
    "classification_confidence": 0.87,
}


def test_envelope_with_event_field():
    body = {"event": "incident.acknowledged", "incident": INCIDENT}
    ev = incident_event("argus", body, delivery_id="msg_1")
    assert ev.type == "argus.incident.acknowledged"
    assert ev.id == deterministic_id("argus", "msg_1")
    assert ev.subject == ev.partitionkey == "INC-2287"
    assert ev.severity == "P2"
    assert ev.attributes()["severity"] == "P2"
    assert ev.data["title"] == "Checkout p99 latency"
    assert ev.data["status"] == "acknowledged"
    assert ev.data["service"] == "svc-checkout"
    assert ev.data["team"] == "team-pay"
    assert ev.data["classification"] == {"auto_classified": True, "confidence": 0.87}
    assert ev.data["upstream"] == body
    assert ev.source == "https://argus.ekarche.com/api/v1/incidents"
    # A valid CloudEvent end to end.
    assert CloudEvent.from_json(ev.to_json()) == ev


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ({"action": "resolved", "incident": INCIDENT}, "resolved"),
        ({"type": "incident.created", "data": INCIDENT}, "created"),
        ({"event_type": "Incident.Severity-Changed", "incident": INCIDENT}, "severity_changed"),
        ({**INCIDENT, "status": "open"}, "created"),
        ({**INCIDENT, "status": "resolved"}, "resolved"),
        ({**INCIDENT, "status": "weird"}, "updated"),
        (
            {"incident": {**INCIDENT, "status": "resolved"}, "previous_status": "resolved"},
            "updated",
        ),
        ({"event": "incident", "incident": {**INCIDENT, "status": "mitigated"}}, "mitigated"),
    ],
)
def test_action_from_field_or_status(body, action):
    assert incident_event("argus", body, delivery_id="d").type == f"argus.incident.{action}"


def test_incident_action_direct():
    assert incident_action({}, {"status": "closed"}) == "closed"


def test_action_memo_is_bounded_and_never_changes_the_answer():
    # Event values are untrusted: a sender cycling through names cannot grow the memo.
    for i in range(argus._ACTIONS_MAX + 500):
        value = f"Incident.Custom-{i}"
        assert incident_action({"event": value}, {}) == f"custom_{i}"
        assert incident_action({"event": value}, {}) == f"custom_{i}"  # memoised (or not)
    assert len(argus._ACTIONS) <= argus._ACTIONS_MAX
    assert incident_action({"event": "incident.incident"}, {"status": "open"}) == "created"


def test_incident_event_takes_any_mapping_not_only_dict():
    from types import MappingProxyType

    body = MappingProxyType({"event": "incident.created", "incident": {**INCIDENT}})
    ev = incident_event("argus", body, delivery_id="d")
    assert ev.subject == INCIDENT["id"] and ev.type == "argus.incident.created"
    with pytest.raises(IncidentShapeError):
        incident_event("argus", ["not", "a", "mapping"], delivery_id="d")


@pytest.mark.parametrize(
    ("value", "want"),
    [("P1", "P1"), ("p4", "P4"), (" P3 ", "P3"), ("P5", None), ("high", None), (2, None)],
)
def test_severity_extension_only_for_p1_to_p4(value, want):
    assert incident_severity(value) == want
    ev = incident_event("argus", {**INCIDENT, "severity": value}, delivery_id="d")
    assert ev.severity == want
    assert ev.data["severity"] == value  # the raw value is kept


@pytest.mark.parametrize(
    "body",
    [[], "x", 3, None, {}, {"incident": {"title": "no id"}}, {"id": ""}, {"id": True}, {"id": []}],
)
def test_wrong_shape(body):
    with pytest.raises(IncidentShapeError):
        incident_event("argus", body, delivery_id="d")


def test_integer_id_and_prefix_and_time():
    body = {"id": 42, "status": "open", "timestamp": "2026-11-23T10:00:00Z"}
    ev = incident_event("argus", body, delivery_id="d", prefix="acme.")
    assert ev.type == "acme.argus.incident.created"
    assert ev.subject == "42"
    assert ev.time == "2026-11-23T10:00:00Z"
    assert incident_event("argus", {**body, "timestamp": "yesterday"}, delivery_id="d").time


def test_same_delivery_same_id_and_body_hash_fallback():
    a = incident_event("argus", {"id": "1"}, delivery_id="x")
    b = incident_event("argus", {"id": "1", "title": "changed"}, delivery_id="x")
    assert a.id == b.id
    assert incident_event("argus", {"id": "1"}).id == incident_event("argus", {"id": "1"}).id
    assert incident_event("other", {"id": "1"}, delivery_id="x").id != a.id


def test_similar_event():
    body = {"event": "incident.created", "incident": INCIDENT}
    created = incident_event("argus", body, delivery_id="m")
    matches = [{"incident_id": "INC-1842", "score": 0.91}]
    ev = similar_event("argus", created, matches)
    assert ev.type == "argus.incident.similar_found"
    assert ev.subject == ev.partitionkey == "INC-2287"
    assert ev.data == {"incident_id": "INC-2287", "for_event": created.id, "matches": matches}
    assert similar_event("argus", created, []).id == ev.id
