"""The records of cluster mode's compacted control topic (pure: no I/O).

Every pull source an instance of a deployment may follow (an Arga validation or demo
run, a generic ``sse``/``websocket``/``poll`` source) is a :class:`RunRecord` keyed by
:func:`record_key` (``run/<source>/<stream>/<id>``). Only the owner of the record's
partition writes it: it says whether the run is being followed, finished, or refused
(401/403/1008, so a new owner does not retry it) or missing (404, 4404), and the stream
position (an SSE ``Last-Event-ID``, a demo run's last event id) recorded once the events
before it are acked by the Kafka events topic.

Anyone else (discovery, a config list, ``argbridge follow``, ``argbridge start``) asks for
a run with a :class:`Hint` keyed ``hint/<source>/<stream>/<id>/<instance>``, sent to the
run's partition (:func:`partition_of`): the owner turns a hint into a record when the
run has none (or, with ``force``, retries a refused/finished one) and then deletes the
hint (a tombstone). Hints never overwrite records, so a discovery poll on every
instance cannot clobber a recorded position. A forced hint (:func:`new_hint`) is keyed by
the instance plus a suffix of its own: under the instance's usual key, the tombstone of an
earlier hint, handled meanwhile, would delete it as well (same key), before its owner
read it or in compaction.

Values are JSON objects with a schema version ``v``. :func:`decode` turns a record into
a typed value, a tombstone, :class:`Newer` (a version this build does not know: the
caller counts, logs and leaves it alone, never misreading it) or :class:`Unreadable`.
Fields this version does not know are ignored (a later minor addition stays readable).
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

#: The schema version this build writes and reads.
SCHEMA_VERSION = 1
#: Record statuses a new owner does not follow again (until a forced hint).
STOPPED = frozenset({"done", "refused", "not_found"})
#: Statuses meaning the upstream refused the run: kept, never retried by a new owner.
REFUSALS = frozenset({"refused", "not_found"})

Stream = Literal["validation", "demo", "sse", "websocket", "poll"]
STREAMS: frozenset[str] = frozenset({"validation", "demo", "sse", "websocket", "poll"})


class RecordError(ValueError):
    """A run record or hint that cannot be built (a bad id, an unknown stream)."""


@dataclass(frozen=True, slots=True)
class RunId:
    """What a record is about: a source, its stream kind and the run (or source) id."""

    source: str
    stream: str
    id: str

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise RecordError(f"unknown stream kind {self.stream!r}")
        for name in ("source", "id"):
            value = getattr(self, name)
            if not value or "/" in value:
                raise RecordError(f"{name} must be a non-empty string without '/': {value!r}")

    @property
    def key(self) -> str:
        return record_key(self)


def record_key(run: RunId) -> str:
    return f"run/{run.source}/{run.stream}/{run.id}"


def hint_key(run: RunId, by: str) -> str:
    return f"hint/{run.source}/{run.stream}/{run.id}/{by}"


def new_hint(run: RunId, origin: str, instance_id: str, at: float, *, force: bool = False) -> Hint:
    """A hint from ``instance_id``. Repeats of a plain hint share a key (idempotent); a
    forced one (``argbridge follow``: retry a refused or finished run) has a key of its own
    (``by`` = ``<instance>+<random>``): sent right after a plain hint of the same
    instance, it would otherwise share that hint's key and go with its tombstone. Readers
    of schema version 1 take ``by`` as it is written, so older instances read it too."""
    by = f"{instance_id}+{uuid.uuid4().hex[:12]}" if force else instance_id
    return Hint(run, origin, by, at, force)


def partition_of(run: RunId, partitions: int) -> int:
    """The control-topic partition of ``run`` (its record and every hint for it)."""
    return zlib.crc32(record_key(run).encode()) % partitions


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The state of one followed run (see the module docstring)."""

    run: RunId
    #: ``following``, ``done``, ``refused``, ``not_found`` or why the stream stopped.
    status: str = "following"
    #: Who first asked for it (``discovery``, ``config``, ``control``, ``url-run``…).
    origin: str = ""
    #: The upstream's words for a refusal or a stop.
    detail: str = ""
    #: Where a new owner resumes (``None``: from the start, the gap filled from REST).
    position: str | None = None
    #: The instance that wrote the record, and when.
    owner: str = ""
    at: float = 0.0

    @property
    def key(self) -> str:
        return record_key(self.run)

    @property
    def active(self) -> bool:
        return self.status not in STOPPED and not self.status.startswith("stopped:")

    def with_position(self, position: str, *, owner: str, at: float) -> RunRecord:
        return replace(self, position=position, owner=owner, at=at)

    def with_status(self, status: str, detail: str, *, owner: str, at: float) -> RunRecord:
        return replace(self, status=status, detail=detail[:500], owner=owner, at=at)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.run.source,
            "stream": self.run.stream,
            "id": self.run.id,
            "status": self.status,
            "origin": self.origin,
            "detail": self.detail,
            "position": self.position,
            "owner": self.owner,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class Hint:
    """A request that ``run`` be followed (``force``: also when refused or finished)."""

    run: RunId
    origin: str
    by: str
    at: float = 0.0
    force: bool = False

    @property
    def key(self) -> str:
        return hint_key(self.run, self.by)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted key (compaction drops it); ``hint`` tells which kind of key."""

    key: str
    hint: bool


@dataclass(frozen=True, slots=True)
class Newer:
    """A value written by a newer schema version: counted, logged, left alone."""

    key: str
    version: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A value that is not a record of any version (counted and logged)."""

    key: str
    reason: str


Decoded = RunRecord | Hint | Tombstone | Newer | Unreadable


def encode_record(record: RunRecord) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, "type": "run", **record.to_json()})


def encode_hint(hint: Hint) -> bytes:
    return orjson.dumps(
        {
            "v": SCHEMA_VERSION,
            "type": "hint",
            "source": hint.run.source,
            "stream": hint.run.stream,
            "id": hint.run.id,
            "origin": hint.origin,
            "by": hint.by,
            "at": hint.at,
            "force": hint.force,
        }
    )


def _str(doc: dict[str, Any], name: str, default: str | None = None) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string")
    return value


def decode(key: bytes | None, value: bytes | None) -> Decoded:
    """The control-topic message ``key``/``value`` as a typed value (never raises)."""
    try:
        text = (key or b"").decode()
    except UnicodeDecodeError:
        return Unreadable(repr(key)[:200], "key is not UTF-8")
    if value is None:
        return Tombstone(text, text.startswith("hint/"))
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Unreadable(text, "value is not JSON")
    if not isinstance(doc, dict):
        return Unreadable(text, "value is not a JSON object")
    version = doc.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return Unreadable(text, "no schema version 'v'")
    if version > SCHEMA_VERSION:
        return Newer(text, version)
    try:
        run = RunId(_str(doc, "source"), _str(doc, "stream"), _str(doc, "id"))
        kind = doc.get("type")
        at = doc.get("at", 0.0)
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise RecordError("field 'at' must be a number")
        if kind == "hint":
            hint = Hint(
                run, _str(doc, "origin", ""), _str(doc, "by"), float(at), doc.get("force") is True
            )
            if hint.key != text:
                raise RecordError(f"key {text!r} does not match the hint ({hint.key!r})")
            return hint
        if kind != "run":
            raise RecordError(f"unknown record type {kind!r}")
        position = doc.get("position")
        if position is not None and not isinstance(position, str):
            raise RecordError("field 'position' must be a string or null")
        record = RunRecord(
            run,
            status=_str(doc, "status"),
            origin=_str(doc, "origin", ""),
            detail=_str(doc, "detail", ""),
            position=position,
            owner=_str(doc, "owner", ""),
            at=float(at),
        )
        if record.key != text:
            raise RecordError(f"key {text!r} does not match the record ({record.key!r})")
        return record
    except RecordError as exc:
        return Unreadable(text, str(exc))
