"""Argus incident webhooks → ``argus.incident.<action>`` CloudEvents.

The Argus reference documents incidents (``id``, ``title``, ``severity`` P1..P4,
``status``, ``service_id``, classification fields) but not the webhook envelope, so the
mapping is liberal: the incident may be the body itself or sit under ``incident``/
``data``/``object``; the action comes from ``event``/``action``/``type`` (``incident.created``
→ ``created``) or, failing that, from the status (``open`` → ``created``, ``resolved`` →
``resolved``…; a ``previous_status`` equal to the status is an ``updated``). Severity
``P1``..``P4`` becomes the ``severity`` extension (other values stay in ``data`` only).
The untouched body is kept under ``data.upstream``. The event id is
``deterministic_id(source name, delivery id)`` so a redelivered webhook is a duplicate.

:func:`similar_event` builds the follow-up ``argus.incident.similar_found`` event of the
optional enrichment.
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
_SEVERITY = re.compile(r"^[Pp]([1-4])$")
#: The severities as they normally arrive, looked up before the regex.
_SEVERITIES = {f"{p}{n}": f"P{n}" for p in "Pp" for n in "1234"}
#: Actions of the ``event``/``action`` values seen so far (bounded: values are untrusted).
_ACTIONS: dict[str, str] = {}
_ACTIONS_MAX = 1024
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class IncidentShapeError(ValueError):
    """Valid JSON that is not an incident payload (→ 422)."""


def _is_mapping(value: Any) -> bool:
    # orjson gives dicts; the ABC check (~0.3 µs) only for other mappings.
    return type(value) is dict or isinstance(value, Mapping)


def _incident(body: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("incident", "data", "object", "payload"):
        inner = body.get(key)
        if inner is not None and _is_mapping(inner) and ("id" in inner or "incident_id" in inner):
            return inner  # type: ignore[no-any-return]
    return body


def _action_of(value: str) -> str:
    action = _ACTIONS.get(value)
    if action is None:
        action = _ACTION.sub("_", value.rsplit(".", 1)[-1].lower()).strip("_")
        if len(_ACTIONS) < _ACTIONS_MAX:
            _ACTIONS[value] = action
    return action


def incident_action(body: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
    """The lifecycle action: explicit field first, then the status."""
    for key in ("event", "action", "event_type", "type"):
        value = body.get(key)
        if isinstance(value, str) and value:
            action = _action_of(value)
            if action and action != "incident":
                return action
    status = incident.get("status")
    previous = body.get("previous_status")
    if isinstance(status, str) and isinstance(previous, str) and previous.lower() == status.lower():
        return "updated"
    if isinstance(status, str) and status.lower() in _STATUS_ACTIONS:
        return _STATUS_ACTIONS[status.lower()]
    return "updated"


def incident_severity(value: Any) -> str | None:
    """``P1``..``P4`` (upper-cased) or ``None``."""
    if isinstance(value, str):
        known = _SEVERITIES.get(value)
        if known is not None:
            return known
        match = _SEVERITY.match(value.strip())
        if match:
            return f"P{match.group(1)}"
    return None


def incident_event(
    source_name: str,
    body: Any,
    *,
    delivery_id: str | None = None,
    base_url: str = "https://argus.ekarche.com/api/v1",
    prefix: str = "",
) -> CloudEvent:
    """Normalise an Argus webhook body; raises :class:`IncidentShapeError` when it has no
    incident id. ``delivery_id`` is the webhook id (or body hash) of this delivery."""
    if not _is_mapping(body):
        raise IncidentShapeError("the body must be a JSON object")
    incident = _incident(body)
    incident_id = incident.get("id") or incident.get("incident_id")
    if not isinstance(incident_id, str | int) or isinstance(incident_id, bool) or incident_id == "":
        raise IncidentShapeError("no incident id (expected 'id' or 'incident.id')")
    incident_id = str(incident_id)
    action = incident_action(body, incident)
    severity = incident.get("severity")
    when = _pick_time(body, incident)
    base = base_url.rstrip("/")
    return CloudEvent(
        id=deterministic_id(source_name, delivery_id or "sha:" + content_hash(body)),
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
        severity=incident_severity(severity),
    )


def _pick_time(body: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
    for obj in (body, incident):
        for key in ("timestamp", "occurred_at", "updated_at", "created_at"):
            value = obj.get(key)
            if isinstance(value, str) and _RFC3339.match(value):
                return value
    return now_rfc3339()


def similar_event(
    source_name: str,
    incident: CloudEvent,
    matches: Any,
    *,
    prefix: str = "",
) -> CloudEvent:
    """The enrichment follow-up: similar incidents of a created incident."""
    incident_id = incident.subject or ""
    return CloudEvent(
        id=deterministic_id(source_name, incident.id, "similar"),
        source=incident.source,
        type=f"{prefix}argus.incident.similar_found",
        subject=incident.subject,
        data={
            "incident_id": incident_id,
            "for_event": incident.id,
            "matches": matches,
        },
        partitionkey=incident.partitionkey,
        severity=incident.severity,
    )
