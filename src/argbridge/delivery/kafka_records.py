"""CloudEvent → Kafka record (CloudEvents Kafka protocol binding), and partition choice.

Pure: no I/O. Owns:

- :func:`render_topic`: a topic template such as ``"argbridge.{type}"`` filled from event
  attributes (``{type}``, ``{source}``, ``{subject}``, ``{partitionkey}``, ``{severity}``
  and any extension), then made a legal Kafka topic name (``[A-Za-z0-9._-]``, ≤ 249);
- :func:`build_record`: binary content mode (the default: ``ce_*`` headers for every
  attribute except ``datacontenttype``, which becomes ``content-type``; the value is the
  raw ``data``) or structured mode (the JSON event format with
  ``content-type: application/cloudevents+json; charset=UTF-8``). The key is
  ``partitionkey`` (the binding's opt-in key mapper), which also stays in the headers;
- :func:`choose_partition` (:func:`partition_for` when the partitions are already sorted):
  the Java/aiokafka default partitioner on the key (murmur2, positive, modulo the number
  of partitions), so every event of a run or incident lands on one partition and keeps
  its order. Keyless events are spread by a hash of their id.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from aiokafka.partitioner import murmur2

from argbridge.errors import EventError
from argbridge.events import (
    ATTRIBUTES,
    TEMPLATE_ATTRIBUTES,
    TRACE_EXTENSIONS,
    CloudEvent,
    ExtensionValue,
)

Mode = Literal["binary", "structured"]
STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
MAX_TOPIC_LENGTH = 249
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]+")
_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record ready for ``BatchBuilder.append``."""

    topic: str
    key: bytes | None
    value: bytes
    #: A list, because aiokafka's C record builder accepts nothing else.
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        """Approximate encoded size (what counts against batch and request limits)."""
        n = len(self.value) + (len(self.key) if self.key else 0)
        return n + sum(len(k) + len(v) for k, v in self.headers) + 32


def _text(value: ExtensionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def template_fields(template: str) -> tuple[str, ...]:
    """The attribute names a topic template uses; raises ``ValueError`` when malformed."""
    names = []
    for _, name, spec, conv in _FORMATTER.parse(template):
        if name is None:
            continue
        if not name or not name.isidentifier() or spec or conv:
            raise ValueError(
                f"topic template {template!r}: use plain {{attribute}} placeholders "
                f"(got {{{name or ''}}})"
            )
        names.append(name)
    return tuple(names)


def check_topic_template(template: str) -> tuple[str, ...]:
    """:func:`template_fields`, and every name must be an attribute argbridge's events can
    carry (:data:`argbridge.events.TEMPLATE_ATTRIBUTES`); raises ``ValueError`` naming the
    unknown one (``"events.{nosuchattr}"`` would otherwise send to ``events.none``)."""
    names = template_fields(template)
    for name in names:
        if name not in TEMPLATE_ATTRIBUTES:
            known = ", ".join(sorted(TEMPLATE_ATTRIBUTES))
            raise ValueError(
                f"topic template {template!r}: unknown attribute {{{name}}} (known: {known})"
            )
    return names


def render_topic(template: str, event: CloudEvent) -> str:
    """Fill ``template`` from the event's attributes; missing attributes become ``none``."""
    if "{" not in template:
        return template
    attrs = event.attributes()
    values = {
        name: _ILLEGAL.sub("_", _text(attrs[name])) if name in attrs else "none"
        for name in template_fields(template)
    }
    topic = _ILLEGAL.sub("_", template.format_map(values)).strip("_")[:MAX_TOPIC_LENGTH]
    if topic in ("", ".", ".."):
        raise EventError(f"topic template {template!r} renders to an illegal topic {topic!r}")
    return topic


def binary_headers(event: CloudEvent) -> list[tuple[str, bytes]]:
    """``ce_*`` headers plus ``content-type`` (binary content mode).

    Written out attribute by attribute (same order as :meth:`CloudEvent.attributes`):
    this runs once per record on the hot path.
    """
    headers = [
        ("ce_specversion", event.specversion.encode()),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    if event.time is not None:
        headers.append(("ce_time", event.time.encode()))
    if event.datacontenttype is not None:
        headers.append(("content-type", event.datacontenttype.encode()))
    if event.dataschema is not None:
        headers.append(("ce_dataschema", event.dataschema.encode()))
    if event.partitionkey is not None:
        headers.append(("ce_partitionkey", event.partitionkey.encode()))
    if event.sequence is not None:
        headers.append(("ce_sequence", str(event.sequence).encode()))
    if event.severity is not None:
        headers.append(("ce_severity", event.severity.encode()))
    for name, value in event.extensions.items():
        headers.append(("ce_" + name, _text(value).encode()))
    if "traceparent" in event.extensions:
        headers += _trace_headers(event.extensions)
    return headers


def _trace_headers(attrs: Mapping[str, object]) -> list[tuple[str, bytes]]:
    """W3C ``traceparent``/``tracestate`` headers (besides their ``ce_`` form), the
    headers tracing libraries read on a Kafka record."""
    return [(name, str(attrs[name]).encode()) for name in TRACE_EXTENSIONS if name in attrs]


def build_record(event: CloudEvent, topic: str, mode: Mode = "binary") -> KafkaRecord:
    """The Kafka record for ``event`` on ``topic`` (already rendered)."""
    key = event.partitionkey.encode() if event.partitionkey else None
    if mode == "structured":
        headers: list[tuple[str, bytes]] = [("content-type", STRUCTURED_CONTENT_TYPE)]
        if "traceparent" in event.extensions:
            headers += _trace_headers(event.extensions)
        return KafkaRecord(topic, key, event.to_json(), headers)
    value = b"" if event.data is None else event.data_bytes()
    return KafkaRecord(topic, key, value, binary_headers(event))


#: Header name for each attribute name in binary mode (``ce_`` + name, except
#: ``datacontenttype``): the spec's attributes, then extension names as they are seen
#: (at most :data:`_MAX_HEADER_NAMES`; past that, made per record).
_HEADER_NAMES: dict[str, str] = {name: "ce_" + name for name in ATTRIBUTES}
_HEADER_NAMES["datacontenttype"] = "content-type"
_MAX_HEADER_NAMES = 1024


def _header_value(v: object) -> bytes:
    if type(v) is str:
        return v.encode()
    if v is True or v is False:
        return b"true" if v else b"false"
    return str(v).encode()


def binary_parts(
    attributes: Mapping[str, object], data_json: bytes
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], str]:
    """``(key, value, headers, id)`` of the binary-mode record of a journaled event, from
    its stored parts: its attributes (every context attribute and extension, no
    ``data``) and the JSON of its ``data`` (``b""`` when it has none), as the journal
    keeps them (:attr:`~argbridge.journal.JournalRecord.attributes`,
    :attr:`~argbridge.journal.JournalRecord.data_json`). Gives the same record as
    :func:`build_record` on the event (tested) without a :class:`CloudEvent` or a
    re-encoding of ``data``.
    """
    key = attributes.get("partitionkey")
    return (
        (key.encode() if type(key) is str and key else None),
        data_json,
        binary_headers_of(attributes),
        str(attributes["id"]),
    )


def binary_headers_of(attributes: Mapping[str, object]) -> list[tuple[str, bytes]]:
    """The headers of :func:`binary_parts` (what :func:`binary_headers` gives for the
    event). This runs once per record on the Kafka sink's hot path, hence the one
    comprehension."""
    names = _HEADER_NAMES
    try:
        headers = [
            (
                names[name],
                v.encode()
                if type(v) is str
                else str(v).encode()
                if type(v) is int  # ``sequence`` (a bool is not an int here: type is)
                else _header_value(v),
            )
            for name, v in attributes.items()
        ]
    except KeyError:  # an extension not seen yet
        headers = []
        for name, v in attributes.items():
            header = names.get(name)
            if header is None:
                header = "ce_" + name
                if len(names) < _MAX_HEADER_NAMES:
                    names[name] = header
            headers.append((header, _header_value(v)))
    if "traceparent" in attributes:
        headers += _trace_headers(attributes)
    return headers


def choose_partition(key: bytes | None, partitions: Sequence[int], fallback: str) -> int:
    """The default partitioner: ``murmur2(key) & 0x7fffffff % n`` over sorted partitions.

    ``fallback`` (the event id) is hashed instead when there is no key, so a keyless
    event always goes to the same partition on redelivery.
    """
    if not partitions:
        raise ValueError("a topic has at least one partition")
    ordered = partitions if _is_sorted(partitions) else sorted(partitions)
    return partition_for(key, ordered, fallback)


def partition_for(key: bytes | None, ordered: Sequence[int], fallback: str) -> int:
    """:func:`choose_partition` over partitions known to be sorted and non-empty (the
    sink sorts them once per topic; the sortedness check cost 0.5 µs per record)."""
    data = key if key is not None else fallback.encode()
    return ordered[_hash(data) % len(ordered)]


@functools.lru_cache(maxsize=8192)
def _hash(data: bytes) -> int:
    # A run's events share a key: murmur2 in pure Python is worth caching (bounded: the
    # keys of the runs and incidents in flight, not every key ever seen).
    result: int = murmur2(data) & 0x7FFFFFFF
    return result


def _is_sorted(values: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))
