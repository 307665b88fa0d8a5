"""The exactly-once Kafka sink's position: its record on the progress topic, and how a
position read back is reconciled with the journal.

Pure: no I/O. Owns:

- :class:`Position`: what one committed transaction covered — the journal it belongs to
  (``journal``: an id made once per journal, kept in the journal's state store), the
  last journal ``seq`` of the batch and that event's id (``event_id``);
- :func:`encode_position` / :func:`decode_position`: the progress record's JSON value
  (versioned; a record this code cannot read is an error, never a guess);
- :func:`progress_key` and :func:`transactional_id`: one progress key and one
  ``transactional_id`` per instance and sink;
- :func:`reconcile`: the start-up decision. The progress topic wins for what was
  committed to Kafka, but only a position that provably belongs to *this* journal moves
  the cursor: same journal id, a seq the journal has reached, and (when the journal still
  holds it) the same event at that seq. Anything else — a wiped state dir (new journal
  id), a restored older copy (the position is ahead of the journal, or another event sits
  at that seq) — is ignored and delivery resumes from the journal's own cursor: events
  may repeat, none is skipped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import orjson

from argbridge.events import CloudEvent, deterministic_id, now_rfc3339

#: Version of the progress record's value.
PROGRESS_VERSION = 1
#: The journal state-store keys this feature owns.
JOURNAL_ID_KEY = "journal.id"
INSTANCE_ID_KEY = "instance.id"


class ProgressError(ValueError):
    """A progress record that cannot be read."""


@dataclass(frozen=True, slots=True)
class Position:
    """The last journal event a committed transaction covered."""

    journal: str
    seq: int
    event_id: str
    #: The process that wrote it (random per start): a daemon that finds another
    #: incarnation's record before reconnecting knows it was superseded.
    incarnation: str = ""


def progress_key(instance_id: str, sink: str) -> bytes:
    """The progress topic key of one instance's sink."""
    return f"{instance_id}/{sink}".encode()


def transactional_id(prefix: str, instance_id: str, sink: str) -> str:
    """The stable ``transactional_id`` of one instance's sink."""
    return f"{prefix}{instance_id}.{sink}"


def encode_position(position: Position, *, instance_id: str, sink: str, at: float) -> bytes:
    """The progress record's value (JSON; ``instance``/``sink``/``at`` for operators)."""
    return orjson.dumps(
        {
            "v": PROGRESS_VERSION,
            "journal": position.journal,
            "seq": position.seq,
            "event_id": position.event_id,
            "incarnation": position.incarnation,
            "instance": instance_id,
            "sink": sink,
            "at": round(at, 3),
        }
    )


def decode_position(value: bytes | None) -> Position | None:
    """The position in a progress record's value (``None`` for a tombstone)."""
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ProgressError(f"progress record is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProgressError("progress record is not a JSON object")
    version = doc.get("v")
    if version != PROGRESS_VERSION:
        raise ProgressError(
            f"progress record version {version!r}: this argbridge reads {PROGRESS_VERSION}"
        )
    journal, seq, event_id = doc.get("journal"), doc.get("seq"), doc.get("event_id")
    if not isinstance(journal, str) or not journal:
        raise ProgressError("progress record: 'journal' must be a non-empty string")
    if type(seq) is not int or seq < 0:
        raise ProgressError("progress record: 'seq' must be a non-negative integer")
    if not isinstance(event_id, str):
        raise ProgressError("progress record: 'event_id' must be a string")
    incarnation = doc.get("incarnation", "")
    if not isinstance(incarnation, str):
        raise ProgressError("progress record: 'incarnation' must be a string")
    return Position(journal, seq, event_id, incarnation)


class Verdict(enum.Enum):
    """What :func:`reconcile` decided."""

    #: No position yet: deliver from the journal's cursor.
    NONE = "none"
    #: The position belongs to this journal: the cursor moves to it (either way).
    RESUME = "resume"
    #: The position belongs to another journal (a wiped state dir): ignored.
    OTHER_JOURNAL = "other_journal"
    #: Same journal id, but the position is not this journal's history (a restored
    #: older copy, or a copy that went its own way): ignored.
    DIVERGED = "diverged"


@dataclass(frozen=True, slots=True)
class Decision:
    """Where delivery resumes, and why."""

    verdict: Verdict
    #: The journal cursor to deliver after.
    cursor: int
    #: The committed position that applies to this journal (records at or before its
    #: seq were committed to Kafka and must not be produced again), if any.
    committed: Position | None
    detail: str


def reconcile(
    position: Position | None,
    *,
    journal_id: str,
    last_seq: int,
    cursor: int,
    event_id_at: str | None,
) -> Decision:
    """Decide where delivery resumes.

    ``event_id_at`` is the id of the journal's event at ``position.seq`` (``None`` when
    the journal no longer holds that seq, or there is no position).
    """
    if position is None:
        return Decision(Verdict.NONE, cursor, None, "no committed position yet")
    if position.journal != journal_id:
        return Decision(
            Verdict.OTHER_JOURNAL,
            cursor,
            None,
            f"the committed position belongs to journal {position.journal}, not to this "
            f"one ({journal_id}: a new or wiped state dir); delivering after cursor {cursor}",
        )
    if position.seq > last_seq:
        return Decision(
            Verdict.DIVERGED,
            cursor,
            None,
            f"the committed position (seq {position.seq}) is ahead of this journal "
            f"(last seq {last_seq}: a restored older copy?); delivering after cursor {cursor}",
        )
    if event_id_at is not None and event_id_at != position.event_id:
        return Decision(
            Verdict.DIVERGED,
            cursor,
            None,
            f"seq {position.seq} holds another event than the committed position names "
            f"(a diverged copy of the state dir?); delivering after cursor {cursor}",
        )
    if event_id_at is None and position.seq > cursor:
        # The journal no longer holds that event and never delivered past it itself:
        # nothing proves the position is this journal's history.
        return Decision(
            Verdict.DIVERGED,
            cursor,
            None,
            f"seq {position.seq} is no longer in the journal and the cursor ({cursor}) is "
            f"behind it: cannot verify the committed position; delivering after cursor "
            f"{cursor}",
        )
    if position.seq == cursor:
        detail = f"resuming after seq {position.seq} (journal cursor agrees)"
    elif position.seq > cursor:
        detail = (
            f"resuming after seq {position.seq}: committed to Kafka, cursor {cursor} "
            "had not followed yet"
        )
    else:
        detail = (
            f"resuming after seq {position.seq}: the journal cursor ({cursor}) was ahead "
            "of what was committed to Kafka"
        )
    return Decision(Verdict.RESUME, position.seq, position, detail)


def fenced_alert_event(sink: str, instance_id: str, txn_id: str, *, at: float) -> CloudEvent:
    """The alert raised when another daemon fenced this sink's transactional producer."""
    return CloudEvent(
        id=deterministic_id("sink-fenced", sink, instance_id, f"{at:.3f}"),
        source=f"urn:argbridge:sink:{sink}",
        type="argbridge.sink.fenced",
        subject=sink,
        time=now_rfc3339(at),
        data={
            "sink": sink,
            "instance_id": instance_id,
            "transactional_id": txn_id,
            "message": f"Kafka sink {sink!r} was fenced: another argbridge runs with instance "
            f"id {instance_id!r}; this one stopped the sink (no duplicates were written)",
        },
        partitionkey=sink,
        severity="high",
    )
