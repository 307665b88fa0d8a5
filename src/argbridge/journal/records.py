"""The journal's values: records, retries, dead letters, stats, append outcomes.

Owns the in-memory types the journal hands out. A :class:`JournalRecord` holds an event
as the event log stores it: its attributes (the CloudEvents JSON object without ``data``)
and its ``data`` (the JSON of the data value), each encoded once by argbridge when the
event was appended. Consumers take what they need without decoding the rest: the Kafka
sink's binary mode builds headers from :attr:`JournalRecord.attributes` and uses
:attr:`JournalRecord.data_json` as the record value; :attr:`JournalRecord.event` and
:attr:`JournalRecord.body` are built on first use.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from argbridge.events import CloudEvent, ExtensionValue

_DATA_KEY = b',"data":'


class AppendStatus(enum.Enum):
    """Outcome of an append: newly journaled, or already known (dropped)."""

    APPENDED = "appended"
    DUPLICATE = "duplicate"


def encode_event(event: CloudEvent) -> tuple[bytes, bytes]:
    """``(attributes JSON, data JSON)`` of ``event``; the data part is ``b""`` without data.

    Both are copied to objects of their own size: ``orjson.dumps`` (3.12 and later) returns
    bytes whose allocation keeps its whole working buffer, at least ~4 KiB and growing
    with the value (measured with tracemalloc, orjson 3.13: 4.1 KiB for a 300 B object,
    60 KiB for a 5 KB one). An encoded event lives from its append until its group commit,
    which a paused journal or a drain makes long: mid-drain (bench_bounds --probe) the
    ~4,200 encoded events of the streams' appends held 41 MiB instead of ~4 MiB. The copy
    costs ~0.1 µs an event."""
    attrs = _exact(orjson.dumps(event.attributes()))
    return attrs, (b"" if event.data is None else _exact(orjson.dumps(event.data)))


class EncodedEvent(NamedTuple):
    """An event as the journal stores it: its id, and the two parts of
    :func:`encode_event` in one bytes object (``body``: attributes JSON then data JSON;
    ``split``: the attributes' length). What a stream reader holds while its events wait
    for admission and their group commit
    (:meth:`~argbridge.journal.log.EventLog.append_encoded`), and what an append op
    holds until then: one allocation of the event's size instead of the decoded
    payload's dicts and strings. An event of more than 512 bytes is then not in Python's
    small-object arenas at all, which stay allocated after a burst while any object in
    them survives (bench_bounds --probe); glibc's heap, where it is, gives free pages
    back to the kernel on a trim."""

    id: str
    body: bytes
    split: int

    @property
    def size(self) -> int:
        """``body_size`` of the two parts (the event's CloudEvents JSON size)."""
        n = len(self.body)
        return n + len(_DATA_KEY) if n > self.split else n


def encoded(event: CloudEvent) -> EncodedEvent:
    """``event`` encoded once, for :meth:`~argbridge.journal.log.EventLog.append_encoded`
    (orjson's over-allocated results are copied once, joined: see :func:`encode_event`)."""
    return encode_parts(event.id, event.attributes(), event.data)


def encode_parts(event_id: str, attributes: Mapping[str, Any], data: Any) -> EncodedEvent:
    """:func:`encoded` of the event whose :meth:`~argbridge.events.CloudEvent.attributes`
    are ``attributes`` (in that order) and whose data is ``data``: what a normaliser that
    builds the attributes itself, without the ``CloudEvent`` object, hands the journal
    (:func:`argbridge.normalize.arga.results_parts`)."""
    attrs = orjson.dumps(attributes)
    if data is None:
        return EncodedEvent(event_id, _exact(attrs), len(attrs))
    return EncodedEvent(event_id, attrs + orjson.dumps(data), len(attrs))


def _exact(raw: bytes) -> bytes:
    """``raw`` in an allocation of its own size (see :func:`encode_event`)."""
    return bytes(memoryview(raw))


def join_body(attrs: bytes, data: bytes) -> bytes:
    """The CloudEvents JSON of an event from its two parts (what ``to_json`` writes)."""
    if not data:
        return attrs
    return attrs[:-1] + _DATA_KEY + data + b"}"


def body_size(attrs: bytes, data: bytes) -> int:
    """``len(join_body(attrs, data))`` without joining."""
    return len(attrs) + len(data) + len(_DATA_KEY) if data else len(attrs)


class JournalRecord:
    """One journaled event with its position.

    Public fields: ``seq``, ``size`` (bytes of the event's JSON), ``appended_at``, and the
    lazily built ``event``, ``body`` (CloudEvents JSON), ``attributes`` (dict, no data)
    and ``data_json`` (the JSON of ``data``; ``b""`` when the event has none). Immutable;
    equal when seq, event, size and appended_at are equal.
    """

    __slots__ = ("_attrs", "_attrs_json", "_body", "_data", "_event", "appended_at", "seq", "size")

    seq: int
    size: int
    appended_at: float
    _event: CloudEvent | None
    _body: bytes | None
    _attrs_json: bytes | None
    _data: bytes | None
    _attrs: dict[str, Any] | None

    def __init__(
        self,
        seq: int,
        event: CloudEvent | None,
        size: int,
        appended_at: float,
        body: bytes | None = None,
    ) -> None:
        if event is None and body is None:
            raise ValueError("a JournalRecord needs its event or its stored body")
        setattr_ = object.__setattr__
        setattr_(self, "seq", seq)
        setattr_(self, "size", size)
        setattr_(self, "appended_at", appended_at)
        setattr_(self, "_event", event)
        setattr_(self, "_body", body)
        setattr_(self, "_attrs_json", None)
        setattr_(self, "_data", None)
        setattr_(self, "_attrs", None)

    @classmethod
    def stored(cls, seq: int, appended_at: float, attrs: bytes, data: bytes) -> JournalRecord:
        """A record as read from the event log (nothing decoded yet)."""
        return stored_record(seq, appended_at, attrs, data)

    def parts(self) -> tuple[bytes, bytes]:
        """``(attributes JSON, data JSON)`` as stored (encoded from the event if needed)."""
        attrs, data = self._attrs_json, self._data
        if attrs is None or data is None:
            attrs, data = encode_event(self.event)
            object.__setattr__(self, "_attrs_json", attrs)
            object.__setattr__(self, "_data", data)
        return attrs, data

    @property
    def event(self) -> CloudEvent:
        event = self._event
        if event is None:
            event = CloudEvent.from_trusted_json(self.body)
            object.__setattr__(self, "_event", event)
        return event

    @property
    def body(self) -> bytes:
        """The event's CloudEvents JSON."""
        body = self._body
        if body is None:
            if self._attrs_json is not None and self._data is not None:
                body = join_body(self._attrs_json, self._data)
            else:
                body = self.event.to_json()
            object.__setattr__(self, "_body", body)
        return body

    @property
    def attributes(self) -> dict[str, ExtensionValue]:
        """Every context attribute and extension of the event (no ``data``)."""
        attrs = self._attrs
        if attrs is None:
            if self._attrs_json is not None:
                attrs = orjson.loads(self._attrs_json)
            else:
                attrs = dict(self.event.attributes())
            object.__setattr__(self, "_attrs", attrs)
        return attrs

    @property
    def data_json(self) -> bytes:
        """The JSON of the event's ``data`` as appended; ``b""`` when it has none."""
        return self.parts()[1]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"JournalRecord is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JournalRecord):
            return NotImplemented
        return (self.seq, self.event, self.size, self.appended_at) == (
            other.seq,
            other.event,
            other.size,
            other.appended_at,
        )

    def __hash__(self) -> int:
        return hash((self.seq, self.size, self.appended_at))

    def __repr__(self) -> str:
        return (
            f"JournalRecord(seq={self.seq!r}, event={self.event!r}, size={self.size!r}, "
            f"appended_at={self.appended_at!r})"
        )


_slot = JournalRecord.__dict__
_set_seq, _set_size = _slot["seq"].__set__, _slot["size"].__set__
_set_at, _set_event = _slot["appended_at"].__set__, _slot["_event"].__set__
_set_body, _set_attrs = _slot["_body"].__set__, _slot["_attrs"].__set__
_set_attrs_json, _set_data = _slot["_attrs_json"].__set__, _slot["_data"].__set__
_new = object.__new__


def stored_record(seq: int, appended_at: float, attrs: bytes, data: bytes) -> JournalRecord:
    """:meth:`JournalRecord.stored` (what it calls). Runs once per event a sink reads,
    so the slots are set through their descriptors (``object.__setattr__`` looks each
    one up first: 0.5 µs more per record, a fifth of decoding a 1 KiB event)."""
    record = _new(JournalRecord)
    _set_seq(record, seq)
    _set_size(record, len(attrs) + len(data) + 8 if data else len(attrs))  # body_size
    _set_at(record, appended_at)
    _set_event(record, None)
    _set_body(record, None)
    _set_attrs_json(record, attrs)
    _set_data(record, data)
    _set_attrs(record, None)
    return record


@dataclass(frozen=True, slots=True)
class RetryItem:
    """An event a sink owes a redelivery, due at ``due_at``."""

    sink: str
    seq: int
    event: CloudEvent
    attempt: int
    due_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a sink gave up on."""

    dlid: int
    sink: str
    seq: int
    event: CloudEvent
    reason: str
    attempts: int
    failed_at: float


@dataclass(frozen=True, slots=True)
class JournalStats:
    """A snapshot for metrics, readiness and ``argbridge status``.

    ``syncs`` counts durable writes (one synced LevelDB write batch = one ``fdatasync`` of
    its log per group commit); ``commits`` counts group commits.
    """

    last_seq: int
    cursors: dict[str, int]
    backlog_events: dict[str, int]
    backlog_bytes: int
    paused: bool
    commits: int
    appended: int
    duplicates: int
    syncs: int = 0
    first_seq: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
