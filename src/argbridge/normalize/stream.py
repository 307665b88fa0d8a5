"""Generic upstream payloads → CloudEvents (the ``sse``, ``websocket`` and ``poll`` sources).

Owns the event shape of the generic sources, pure and unit-tested on literals:

- ``type``: ``<prefix><ce_type>.<event>`` for streams (``event`` is the SSE ``event:``
  name, or what the mapping says), ``<prefix><ce_type>`` for polled items, unless the
  mapping's ``type`` expression gives one (then ``<prefix><mapped>``);
- ``id``: deterministic. A mapped ``id`` → ``(source, "mapped", value)``; an SSE ``id:``
  → ``(source, run, "id", value)``; otherwise ``(source, run, "pos", position, event,
  SHA-256 of the content)``, so a reconnect that replays the stream from its start
  gets the same ids and the journal drops the overlap. A polled item: ``(source,
  item id, change marker)``, so re-polling an unchanged item emits nothing new;
- ``subject`` and ``partitionkey``: mapped, else the run (streams) or the item id;
- ``data``: ``event``/``run`` (streams) or ``item_id``/``marker`` (poll), the mapping's
  named ``data`` fields (those that are not null), ``upstream`` (the payload, untouched
  except for oversized fields, see :mod:`argbridge.normalize.oversize`) and
  ``truncated`` when fields were replaced.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from argbridge.events import CloudEvent, deterministic_id
from argbridge.normalize.mapping import EMPTY, CompiledMapping, Mapped, identity_text
from argbridge.normalize.oversize import Replaced, shrink

_TYPE_PART = re.compile(r"[^a-z0-9_-]+")


def type_part(value: str, default: str = "message") -> str:
    """An upstream name as one segment of an event type (lower case, ``[a-z0-9_-]``)."""
    part = _TYPE_PART.sub("_", value.strip().lower()).strip("_")
    return part or default


@dataclass(frozen=True, slots=True)
class EventSpec:
    """How one generic source shapes its events."""

    source_name: str
    #: CloudEvents ``source`` attribute (default: the upstream URL).
    ce_source: str
    #: Type stem, e.g. ``argus.e2e``.
    ce_type: str
    prefix: str = ""
    mapping: CompiledMapping = EMPTY
    #: Payloads whose JSON is larger get their largest fields replaced (0 = no cap).
    max_event_bytes: int = 0
    #: ``data.url`` of every event unless the mapping sets it.
    link: str | None = None


def _finish(
    spec: EventSpec,
    mapped: Mapped,
    *,
    default_id: str,
    default_type: str,
    default_subject: str | None,
    now: str,
    head: dict[str, Any],
    payload: Any,
    size: int,
) -> tuple[CloudEvent, list[Replaced]]:
    upstream, replaced = (
        shrink(payload, size, spec.max_event_bytes) if spec.max_event_bytes else (payload, [])
    )
    fields = {k: v for k, v in mapped.data.items() if v is not None}
    data = {**head, **fields, "upstream": upstream}
    if spec.link and data.get("url") is None:
        data["url"] = spec.link
    if replaced:
        data["truncated"] = [r.to_json() for r in replaced]
    subject = mapped.subject or default_subject
    event = CloudEvent(
        id=(
            deterministic_id("mapped", spec.source_name, mapped.id)
            if mapped.id is not None
            else default_id
        ),
        source=spec.ce_source,
        type=spec.prefix + (mapped.type or default_type),
        subject=subject,
        time=mapped.time or now,
        data=data,
        partitionkey=mapped.partitionkey or subject,
        severity=mapped.severity,
    )
    return event, replaced


def stream_event(
    spec: EventSpec,
    payload: Any,
    *,
    run: str,
    event: str,
    position: int,
    content: bytes | str,
    upstream_id: str | None,
    now: str,
) -> tuple[CloudEvent, list[Replaced]]:
    """One stream message (``content``: its raw text, ``payload`` decoded) as an event.

    Raises :class:`~argbridge.normalize.mapping.MappingError` or
    :class:`~argbridge.errors.EventError` (the caller rejects the message)."""
    mapped = spec.mapping.apply(payload)
    if upstream_id:
        default_id = deterministic_id("stream", spec.source_name, run, "id", upstream_id)
    else:
        raw = content.encode() if isinstance(content, str) else content
        digest = hashlib.sha256(raw).hexdigest()
        default_id = deterministic_id(
            "stream", spec.source_name, run, "pos", position, event, digest
        )
    return _finish(
        spec,
        mapped,
        default_id=default_id,
        default_type=f"{spec.ce_type}.{type_part(event)}",
        default_subject=run or None,
        now=now,
        head={"event": event, "run": run or None},
        payload=payload,
        size=len(content),
    )


def item_event(
    spec: EventSpec,
    item: Any,
    *,
    item_id: Any,
    marker: Any,
    size: int,
    now: str,
) -> tuple[CloudEvent, list[Replaced]]:
    """One new or changed polled item as an event (``marker``: its change marker)."""
    mapped = spec.mapping.apply(item)
    key, mark = identity_text(item_id), identity_text(marker)
    return _finish(
        spec,
        mapped,
        default_id=deterministic_id("poll", spec.source_name, key, mark),
        default_type=spec.ce_type,
        default_subject=key,
        now=now,
        head={"item_id": item_id, "marker": marker},
        payload=item,
        size=size,
    )
