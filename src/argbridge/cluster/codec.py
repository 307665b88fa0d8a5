"""Kafka record → CloudEvent: the decoding half of :mod:`argbridge.delivery.kafka_records`.

Pure: no I/O. The events topic carries every journaled event as the Kafka sink writes it
(:func:`~argbridge.delivery.kafka_records.build_record` /
:func:`~argbridge.delivery.kafka_records.binary_parts`): binary content mode, ``ce_*``
headers for the attributes, ``content-type`` for ``datacontenttype``, the JSON of
``data`` as the value (empty: no data). Structured mode (``content-type:
application/cloudevents+json``) is read too. The plain ``traceparent``/``tracestate``
headers duplicate their ``ce_`` form and are ignored, as is any header without the
``ce_`` prefix.

Header values are strings in the binding, so an extension that was an integer or a
boolean comes back as its text (``sequence`` is an integer again: the event model
parses it). :class:`RecordError` says which record and why; the delivery consumer counts
and logs it and moves on (a poison record never blocks its partition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from argbridge.errors import EventError
from argbridge.events import CloudEvent

_STRUCTURED = b"application/cloudevents+json"


class RecordError(ValueError):
    """A record of the events topic that is not a CloudEvent argbridge can read."""


def header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    """The last value of header ``name`` (``None``: absent)."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def decode_event(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> CloudEvent:
    """The CloudEvent of one record (binary or structured mode); :class:`RecordError`
    when it is neither."""
    content_type = header(headers, "content-type")
    body = value or b""
    if content_type is not None and content_type.split(b";")[0].strip() == _STRUCTURED:
        try:
            return CloudEvent.from_json(body)
        except (EventError, orjson.JSONDecodeError, TypeError) as exc:
            raise RecordError(f"structured CloudEvent unreadable: {exc}") from None
    attrs: dict[str, Any] = {}
    for key, raw in headers:
        if not key.startswith("ce_"):
            continue
        try:
            attrs[key[3:]] = raw.decode()
        except UnicodeDecodeError:
            raise RecordError(f"header {key} is not UTF-8") from None
    if "specversion" not in attrs:
        raise RecordError("no ce_specversion header: not a CloudEvents binary-mode record")
    if content_type is not None:
        try:
            attrs["datacontenttype"] = content_type.decode()
        except UnicodeDecodeError:
            raise RecordError("header content-type is not UTF-8") from None
    if body:
        try:
            attrs["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"value is not JSON data: {exc}") from None
    try:
        return CloudEvent.from_dict(attrs)
    except (EventError, TypeError) as exc:
        raise RecordError(f"not a valid CloudEvent: {exc}") from None
