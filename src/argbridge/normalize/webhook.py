"""Generic inbound webhooks → CloudEvents whose ``type`` comes from config.

No vendor mapping: ``data`` is the posted JSON object itself under ``upstream``, plus the
delivery id. ``subject``/``partitionkey`` come from a configured top-level field when it
holds a string or integer. The event id is ``deterministic_id(source name, delivery id)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from argbridge.events import CloudEvent, deterministic_id, now_rfc3339


class WebhookShapeError(ValueError):
    """Valid JSON the generic webhook source cannot take (→ 422)."""


def generic_event(
    source_name: str,
    body: Any,
    *,
    delivery_id: str,
    ce_type: str,
    ce_source: str | None = None,
    subject_field: str | None = None,
    now: float | None = None,
) -> CloudEvent:
    """Wrap a posted JSON object; raises :class:`WebhookShapeError` for anything else."""
    if not isinstance(body, Mapping):
        raise WebhookShapeError("the body must be a JSON object")
    subject: str | None = None
    if subject_field is not None:
        value = body.get(subject_field)
        if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
            subject = str(value)
    return CloudEvent(
        id=deterministic_id(source_name, delivery_id),
        source=ce_source or f"urn:argbridge:webhook:{source_name}",
        type=ce_type,
        subject=subject,
        time=now_rfc3339(now),
        data={"delivery_id": delivery_id, "upstream": body},
        partitionkey=subject,
    )
