"""Argus incident webhooks → ``argus.incident.<action>`` CloudEvents.

The Argus reference documents incidents (``id``, ``title``, ``severity`` P1..P4,
``status``, ``service_id``, classification fields) but not the webhook envelope, so the
mapping is liberal: the incident may be the body itself or sit under ``incident``/
``data``/``object``; the action comes from ``event``/``action``/``type`` (``incident.created``
→ ``created``) or, failing that, from the status (``open`` → ``created``, ``resolved`` →
``resolved``…). The untouched body is kept under ``data.upstream``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from argbridge.events import CloudEvent, deterministic_id, now_rfc3339
from argbridge.normalize.arga import content_hash

_STATUS_ACTIONS = {
    "open": "created",
    "triggered": "created",
    "new": "created",
    "acknowledged": "acknowledged",
    "investigating": "updated",
    "identified": "updated",
    "monitoring": "updated",
    "mitigated": "mitigated",
    "resolved": "resolved",
    "closed": "closed",
}
_ACTION = re.compile(r"[^a-z0-9_]+")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class IncidentShapeError(ValueError):
    """Valid JSON that is not an incident payload (→ 422)."""


def _incident(body: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("incident", "data", "object", "payload"):
        inner = body.get(key)
        if isinstance(inner, Mapping) and ("id" in inner or "incident_id" in inner):
            return inner
    return body


def incident_action(body: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
    """The lifecycle action: explicit field first, then the status."""
    for key in ("event", "action", "event_type", "type"):
        value = body.get(key)
        if isinstance(value, str) and value:
            action = value.rsplit(".", 1)[-1].lower()
            action = _ACTION.sub("_", action).strip("_")
            if action and action != "incident":
                return action
    status = incident.get("status")
    if isinstance(status, str) and status.lower() in _STATUS_ACTIONS:
        return _STATUS_ACTIONS[status.lower()]
    return "updated"


def incident_event(
    source_name: str,
    body: Any,
    *,
    delivery_id: str | None = None,
    base_url: str = "https://argus.ekarche.com/api/v1",
    prefix: str = "",
) -> CloudEvent:
    """Normalise an Argus webhook body; raises :class:`IncidentShapeError` when it has no
    incident id."""
    if not isinstance(body, Mapping):
        raise IncidentShapeError("the body must be a JSON object")
    incident = _incident(body)
    incident_id = incident.get("id") or incident.get("incident_id")
    if not isinstance(incident_id, str | int) or isinstance(incident_id, bool) or incident_id == "":
        raise IncidentShapeError("no incident id (expected 'id' or 'incident.id')")
    incident_id = str(incident_id)
    action = incident_action(body, incident)
    severity = incident.get("severity")
    identity = delivery_id or "sha:" + content_hash(body)
    when = _pick_time(body, incident)
    base = base_url.rstrip("/")
    return CloudEvent(
        id=deterministic_id("argus-webhook", source_name, identity),
        source=f"{base}/incidents",
        type=f"{prefix}argus.incident.{action}",
        subject=incident_id,
        time=when,
        data={
            "incident_id": incident_id,
            "action": action,
            "title": incident.get("title"),
            "status": incident.get("status"),
            "previous_status": body.get("previous_status"),
            "severity": severity,
            "service": incident.get("service") or incident.get("service_id"),
            "team": incident.get("team") or incident.get("team_id"),
            "classification": {
                "auto_classified": incident.get("auto_classified"),
                "confidence": incident.get("classification_confidence"),
            },
            "urls": {"incident": f"{base}/incidents/{incident_id}"},
            "upstream": body,
        },
        partitionkey=incident_id,
        severity=severity if isinstance(severity, str) and severity else None,
    )


def _pick_time(body: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
    for obj in (body, incident):
        for key in ("timestamp", "occurred_at", "updated_at", "created_at"):
            value = obj.get(key)
            if isinstance(value, str) and _RFC3339.match(value):
                return value
    return now_rfc3339()
