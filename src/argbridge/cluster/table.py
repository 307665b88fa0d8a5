"""What the owner of control-topic partitions does with what it reads there (pure).

Owns :class:`PartitionTable`: the decoded messages of one partition, applied in offset
order (a compacted topic: the newest value of each key wins), and :meth:`PartitionTable.plan`,
the steps that make the owner's work match the table:

- a record that is active (``following``) is followed, from its position;
- a run with hints but no record gets a record (``following``, the first hint's
  origin) and is followed; a ``force`` hint newer than a stopped record (refused,
  missing, done) makes it ``following`` again (``argbridge follow RUN_ID`` on purpose);
- handled hints are deleted (tombstones), after the record is written;
- a record of a newer schema version is left alone (not followed, never rewritten);
- a ``done`` record older than a grace period is deleted (:meth:`PartitionTable.expired`),
  unless its run came from the config (every instance asks for its config runs again at
  each start: a deleted record would be followed anew); refusals are kept. The grace
  outlasts a discovery listing that still shows the run as running after its end: a hint
  meanwhile meets the ``done`` record and is dropped.

The member (:mod:`argbridge.cluster.member`) carries the steps out: writes first, then
follows, then deletes hints.

:class:`Latest` is what a partition's re-read after an assignment keeps until it reached
the partition's end: the newest raw value of each key (compaction, as Kafka's cleaner
does it), so that only those are decoded and applied, in offset order, instead of every
position a run recorded since the partition was last compacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from argbridge.cluster.records import (
    Decoded,
    Hint,
    Newer,
    RunRecord,
    Tombstone,
    Unreadable,
)

#: Origins whose finished runs keep their ``done`` record (see the module docstring).
KEPT_ORIGINS = frozenset({"config"})


@dataclass(slots=True)
class Entry:
    """One run's record, its pending hints and their offsets."""

    record: RunRecord | None = None
    record_offset: int = -1
    hints: dict[str, tuple[int, Hint]] = field(default_factory=dict)
    #: The record's value has a newer schema version than this build's.
    newer: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """Records to write, runs to follow (with their records), hint keys to delete."""

    write: tuple[RunRecord, ...] = ()
    follow: tuple[RunRecord, ...] = ()
    drop: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.write or self.follow or self.drop)


class PartitionTable:
    """The control records of one partition (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.newer = 0
        self.unreadable = 0
        #: Messages applied (a rebuild's cost: the partition's records and every
        #: not yet compacted older value).
        self.read = 0

    def apply(self, offset: int, item: Decoded) -> str | None:
        """Apply one message; returns the record key it concerns (``None``: none)."""
        self.read += 1
        if isinstance(item, Unreadable):
            self.unreadable += 1
            return None
        if isinstance(item, Newer):
            self.newer += 1
            if item.key.startswith("run/"):
                if self._stale(item.key, offset):
                    return None
                entry = self.entries.setdefault(item.key, Entry())
                entry.newer = item.version
                entry.record = None
                entry.record_offset = offset
                return item.key
            return None
        if isinstance(item, Tombstone):
            if item.hint:
                run_key = _run_key_of_hint(item.key)
                hinted = self.entries.get(run_key)
                if hinted is not None:
                    hinted.hints.pop(item.key, None)
                return run_key
            if self._stale(item.key, offset):
                return None
            deleted = self.entries.get(item.key)
            if deleted is not None:
                deleted.record, deleted.record_offset, deleted.newer = None, offset, 0
            return item.key
        if not isinstance(item, Hint) and self._stale(item.run.key, offset):
            return None
        entry = self.entries.setdefault(item.run.key, Entry())
        if isinstance(item, Hint):
            entry.hints[item.key] = (offset, item)
        else:
            entry.record, entry.record_offset, entry.newer = item, offset, 0
        return item.run.key

    def _stale(self, run_key: str, offset: int) -> bool:
        """A value of ``run_key`` older than the one applied: the owner applies its own
        writes when Kafka acks them, before its consumer reads the messages before them
        (a finished run's stale ``following`` record would be followed again)."""
        entry = self.entries.get(run_key)
        return entry is not None and offset < entry.record_offset

    def expired(self, now: float, grace: float) -> list[RunRecord]:
        """The ``done`` records to delete at ``now`` (see the module docstring)."""
        return [
            e.record
            for e in self.entries.values()
            if e.record is not None
            and e.record.status == "done"
            and e.record.origin not in KEPT_ORIGINS
            and e.record.at <= now - grace
            and not e.hints
        ]

    def records(self) -> list[RunRecord]:
        return [e.record for e in self.entries.values() if e.record is not None]

    def plan(self, keys: list[str] | None, *, owner: str, now: float) -> Plan:
        """The steps for ``keys`` (``None``: every run of the partition)."""
        write: list[RunRecord] = []
        follow: list[RunRecord] = []
        drop: list[str] = []
        for key in self.entries if keys is None else keys:
            entry = self.entries.get(key)
            if entry is None or entry.newer:
                continue
            record = entry.record
            hints = sorted(entry.hints.values(), key=lambda h: h[0])
            if record is None and hints:
                first = hints[0][1]
                record = RunRecord(first.run, origin=first.origin, owner=owner, at=now)
                write.append(record)
            elif record is not None and not record.active:
                forced = [h for off, h in hints if h.force and off > entry.record_offset]
                if forced:
                    record = record.with_status("following", "", owner=owner, at=now)
                    write.append(record)
            drop.extend(k for _, h in hints for k in (h.key,))
            if record is not None and record.active:
                follow.append(record)
        return Plan(tuple(write), tuple(follow), tuple(drop))


class Latest:
    """The newest message of each key read so far (see the module docstring)."""

    def __init__(self) -> None:
        self._by_key: dict[bytes | None, tuple[int, bytes | None]] = {}
        #: Messages added (the re-read's size, compacted or not).
        self.read = 0

    def add(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.read += 1
        self._by_key[key] = (offset, value)

    def drain(self) -> list[tuple[int, bytes | None, bytes | None]]:
        """The kept messages in offset order (and forget them)."""
        out = sorted((offset, key, value) for key, (offset, value) in self._by_key.items())
        self._by_key = {}
        return out

    def __len__(self) -> int:
        return len(self._by_key)


def _run_key_of_hint(hint_key: str) -> str:
    """``hint/<source>/<stream>/<id>/<by>`` → ``run/<source>/<stream>/<id>``."""
    parts = hint_key.split("/")
    return "run/" + "/".join(parts[1:4])
