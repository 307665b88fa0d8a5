"""The journal's key layout and value codecs, and the transaction a group commit builds.

Why LevelDB: dedupe needs an index over random UUID ids. A B-tree (SQLite's UNIQUE
index, journal v1) touches about one new page per id per commit; an LSM tree (sorted runs
plus bloom filters) appends. ``plyvel`` releases the GIL during a synced write, so a
commit in the writer thread never stalls the event loop (``rocksdict`` does not).

The keys live in two LevelDB databases, the log and the index (``journal/engine.py``
routes them by prefix and says why): a group commit, whatever it holds (appends, acks,
retries, dead letters, state), is ONE synced write batch of the log (atomic, one
``fdatasync``), and the index is derived from it. Key layout (``>Q`` = 8-byte
big-endian, so keys sort by number); every key of the log other than the events sorts
after them::

    log (<path>):
    e<seq>                    event: >d appended_at, >I len(attrs), attrs JSON, data JSON
    k<sink>                   cursor: >Q seq
    l<dlid>                   dead letter: parts(meta JSON, attrs, data)
    m:version                 b"3"
    m:last_seq                >Q   highest seq ever assigned (survives retention)
    m:group                   token of the last group commit written (disk full: did a
                              failed write land after all?)
    q<sink>\\0<due>\\0<id>    retry due index (due: >d, non-negative doubles sort as bytes)
    r<sink>\\0<id>            retry: parts(meta JSON, attrs, data)
    s<key>                    state: >d updated_at + UTF-8 value

    index (<path>/ids):
    i<id>                     dedupe index: >Q seq, >d appended_at (kept as the tombstone
                              after retention deletes the event, until dedupe_window)
    m:ids_seq                 >Q   the highest event seq whose id is here
    t<seq>                    tombstone queue: >d appended_at + id (ids to expire, in order)

LevelDB's own files (``*.ldb`` tables, ``LOG``, ``MANIFEST-*``, the write-ahead
``*.log``) are LevelDB's business; argbridge reads them only through plyvel.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from argbridge.journal.engine import Engine

K_VERSION = b"m:version"
K_LAST_SEQ = b"m:last_seq"
K_GROUP = b"m:group"
P_EVENT = b"e"
P_ID = b"i"
P_TOMB = b"t"
P_CURSOR = b"k"
P_RETRY = b"r"
P_DUE = b"q"
P_DEAD = b"l"
P_STATE = b"s"

#: The log's memtable size and block cache (see ``engine.open_db``).
WRITE_BUFFER_SIZE = 4 * 1024 * 1024
BLOCK_CACHE_SIZE = 2 * 1024 * 1024
#: LevelDB's own defaults, named: the open tables it caches (each mapped into memory
#: while open; LevelDB keeps at least 64), its block size and its table file size. A
#: smaller ``max_open_files`` (74, LevelDB's floor) or ``max_file_size`` (512 KiB) did not
#: bound the mapped tables' RSS over a soak's 700,000 events (docs/operations.md).
MAX_OPEN_FILES = 1000
#: The index's memtable and block cache (``engine.py``). Its records are ~60 bytes, but
#: every level-0 table of random ids overlaps all of level 1, so each memtable flush
#: leads to a rewrite of level 1: with a 1 MiB memtable, its compactions cost 3-4x the
#: CPU of a 4 MiB one past 200,000 events (bench_engine_compaction). The cache serves
#: little: a dedupe miss stops at the bloom filters, a hit is a recent id (memtable).
IDS_WRITE_BUFFER_SIZE = WRITE_BUFFER_SIZE
IDS_BLOCK_CACHE_SIZE = 1024 * 1024
#: Bloom filter bits per key: the log's 10 (~1 % false positives), the index's 20
#: (~0.01 %). Nearly every lookup in the index is a miss (a new id) in every level, and
#: a false positive reads a data block through LevelDB's memory-mapped tables, where
#: the kernel maps the 64 KiB around each fault: at 10 bits, 10,000 misses left 8.7 MiB
#: of a 12 MiB index resident in the process's RSS, at 20 bits 3.4 MiB (the filters and
#: index blocks themselves), for 2.5 bytes per id of filter instead of 1.25.
BLOOM_BITS = 10
IDS_BLOOM_BITS = 20
BLOCK_SIZE = 4096
MAX_FILE_SIZE = 2 * 1024 * 1024

_Q = struct.Struct(">Q")
_D = struct.Struct(">d")
_EV = struct.Struct(">dI")
#: The header of an event's stored value: ``appended_at``, ``len(attrs)``.
EVENT_HEADER = _EV
_IDX = struct.Struct(">Qd")
_LEN = struct.Struct(">I")
SEQ_END = P_EVENT + b"\xff" * 9


def seq_key(seq: int) -> bytes:
    return P_EVENT + _Q.pack(seq)


def key_seq(key: bytes) -> int:
    return int(_Q.unpack_from(key, 1)[0])


def pack_u64(n: int) -> bytes:
    return _Q.pack(n)


def unpack_u64(raw: bytes) -> int:
    return int(_Q.unpack(raw)[0])


def pack_event(appended_at: float, attrs: bytes, data: bytes) -> bytes:
    return _EV.pack(appended_at, len(attrs)) + attrs + data


def pack_joined(appended_at: float, body: bytes, split: int) -> bytes:
    """:func:`pack_event` of attrs + data already joined (``split``: len(attrs))."""
    return _EV.pack(appended_at, split) + body


def unpack_event(raw: bytes) -> tuple[float, bytes, bytes]:
    """``(appended_at, attrs JSON, data JSON)``."""
    appended_at, n = _EV.unpack_from(raw)
    start = _EV.size
    return appended_at, raw[start : start + n], raw[start + n :]


def event_appended_at(raw: bytes) -> float:
    return float(_D.unpack_from(raw)[0])


def pack_index(seq: int, appended_at: float) -> bytes:
    return _IDX.pack(seq, appended_at)


def unpack_index(raw: bytes) -> tuple[int, float]:
    seq, at = _IDX.unpack(raw)
    return int(seq), float(at)


def pack_tomb(appended_at: float, event_id: str) -> bytes:
    return _D.pack(appended_at) + event_id.encode()


def unpack_tomb(raw: bytes) -> tuple[float, str]:
    return float(_D.unpack_from(raw)[0]), raw[_D.size :].decode()


def event_id_of(attrs: bytes) -> str:
    """The ``id`` of an event from its stored attributes JSON."""
    return str(orjson.loads(attrs)["id"])


def pack_state(updated_at: float, value: str) -> bytes:
    return _D.pack(updated_at) + value.encode()


def unpack_state(raw: bytes) -> tuple[float, str]:
    return float(_D.unpack_from(raw)[0]), raw[_D.size :].decode()


def id_key(event_id: str) -> bytes:
    return P_ID + event_id.encode()


def cursor_key(sink: str) -> bytes:
    return P_CURSOR + sink.encode()


def retry_key(sink: str, event_id: str) -> bytes:
    return P_RETRY + sink.encode() + b"\0" + event_id.encode()


def due_prefix(sink: str) -> bytes:
    return P_DUE + sink.encode() + b"\0"


def due_key(sink: str, due_at: float, event_id: str) -> bytes:
    return due_prefix(sink) + _D.pack(max(0.0, due_at)) + b"\0" + event_id.encode()


def due_of(key: bytes, prefix_len: int) -> float:
    return float(_D.unpack_from(key, prefix_len)[0])


def dead_key(dlid: int) -> bytes:
    return P_DEAD + _Q.pack(dlid)


def state_key(key: str) -> bytes:
    return P_STATE + key.encode()


def pack_parts(meta: dict[str, Any], *parts: bytes) -> bytes:
    """``meta`` as JSON then each part, every one length-prefixed."""
    out = [orjson.dumps(meta), *parts]
    return b"".join(_LEN.pack(len(p)) + p for p in out)


def unpack_parts(raw: bytes) -> tuple[dict[str, Any], list[bytes]]:
    parts: list[bytes] = []
    i = 0
    while i < len(raw):
        (n,) = _LEN.unpack_from(raw, i)
        i += _LEN.size
        parts.append(raw[i : i + n])
        i += n
    return orjson.loads(parts[0]), parts[1:]


#: LevelDB's block compression (``journal.compression``): what its compactions compress
#: and decompress again at every level they move the events through.
Compression = Literal["snappy", "none"]


ABSENT = object()
_ABSENT = ABSENT


class Txn:
    """The writes of one group commit, not yet durable: an overlay over the database.

    Reads see the committed database plus this transaction's own writes; :meth:`write`
    makes them durable as one synced write batch (``sync=False``: written, not synced; a
    group of cursor acks only, see ``journal.fsync_acks``). :meth:`savepoint` /
    :meth:`rollback` undo one operation's writes (an op that fails spoils only itself).
    """

    def __init__(self, db: Engine, *, sync: bool = True) -> None:
        self.db = db
        self.sync = sync
        #: Every key this transaction wrote (``None``: deleted): what its reads see.
        self.overlay: dict[bytes, bytes | None] = {}
        #: Keys written since the last :meth:`flush` into the write batch.
        self.dirty: dict[bytes, bytes | None] = {}
        self._batch: Any = None
        self._undo: dict[bytes, object] | None = None

    def get(self, key: bytes) -> bytes | None:
        overlay = self.overlay
        if key in overlay:
            return overlay[key]
        return self.db.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        undo = self._undo
        if undo is not None and key not in undo:
            undo[key] = self.overlay.get(key, _ABSENT)
        self.overlay[key] = self.dirty[key] = value

    def delete(self, key: bytes) -> None:
        undo = self._undo
        if undo is not None and key not in undo:
            undo[key] = self.overlay.get(key, _ABSENT)
        self.overlay[key] = self.dirty[key] = None

    def savepoint(self) -> None:
        self._undo = {}

    def release(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        undo, self._undo = self._undo or {}, None
        for key, old in undo.items():
            if old is _ABSENT:
                # Never written by this group before the op: not in the batch either.
                del self.overlay[key]
                self.dirty.pop(key, None)
            else:
                self.overlay[key] = self.dirty[key] = old  # type: ignore[assignment]

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Live ``(key, value)`` pairs under ``prefix`` (from ``start``), in key order,
        merging this transaction's writes into the database's."""
        lo = start if start is not None else prefix
        mine = sorted((k, v) for k, v in self.overlay.items() if k.startswith(prefix) and k >= lo)
        it = self.db.iterator(start=lo) if start is not None else self.db.iterator(prefix=prefix)
        with it:
            j = 0
            for key, value in it:
                if not key.startswith(prefix):
                    break
                while j < len(mine) and mine[j][0] < key:
                    k, v = mine[j]
                    j += 1
                    if v is not None:
                        yield k, v
                if j < len(mine) and mine[j][0] == key:
                    k, v = mine[j]
                    j += 1
                    if v is not None:
                        yield k, v
                    continue
                yield key, value
            for k, v in mine[j:]:
                if v is not None:
                    yield k, v

    def flush(self) -> None:
        """Copy the writes since the last flush into the write batch (in order: a later
        write of a key overrides an earlier one when the batch is applied)."""
        if not self.dirty:
            return
        batch = self._batch
        if batch is None:
            batch = self._batch = self.db.write_batch(sync=self.sync)
        batch.apply(self.dirty)
        self.dirty = {}

    def write(self) -> None:
        """Make every write durable: one synced write batch of the log, one call that
        releases the GIL for all of it (one ``fdatasync``), then the index's (see
        ``journal/engine.py``)."""
        self.flush()
        if self._batch is not None:
            self._batch.write()


def read_events(
    db: Any, after_seq: int, limit: int, max_bytes: int | None = None
) -> list[tuple[int, bytes]]:
    """Up to ``limit`` ``(seq, stored value)`` pairs with ``seq > after_seq``; with
    ``max_bytes``, stops before the event that would take the events' JSON size past it
    (but returns at least one event, however large)."""
    if limit <= 0:
        return []
    # fill_cache=False: a bulk scan, whose blocks would only push the ones dedupe and the
    # next reads use out of the (small) block cache.
    unpack = _Q.unpack_from  # key_seq, inlined: once per event read
    with db.iterator(start=seq_key(after_seq + 1), stop=SEQ_END, fill_cache=False) as it:
        return take_events(((unpack(key, 1)[0], value) for key, value in it), limit, max_bytes)


def take_events(
    rows: Iterable[tuple[int, bytes]], limit: int, max_bytes: int | None
) -> list[tuple[int, bytes]]:
    """The first ``limit`` of ``rows`` (``(seq, stored value)``, in seq order); with
    ``max_bytes``, stops before the row that would take the events' JSON size past it, but
    takes at least one. The one rule of :func:`read_events` and of the writer's tail of
    recent events (:mod:`argbridge.journal.tail`)."""
    out: list[tuple[int, bytes]] = []
    if limit <= 0:
        return out
    if max_bytes is None:
        for row in rows:
            out.append(row)
            if len(out) >= limit:
                break
        return out
    budget = max_bytes
    header, unpack_len = _EV.size, _EV.unpack_from
    for row in rows:
        # The event's JSON size (records.body_size) from the stored lengths: attrs,
        # data and the ``,"data":`` joint when there is data.
        value = row[1]
        n_attrs = unpack_len(value)[1]
        n_data = len(value) - header - n_attrs
        size = n_attrs + n_data + 8 if n_data else n_attrs
        if size > budget and out:
            break  # not read again: the next read starts after the last one returned
        budget -= size
        out.append(row)
        if len(out) >= limit:
            break
    return out


#: :func:`flush_memtable` flushes the memtables holding more than this (LevelDB's memory
#: property counts the block caches too, up to ``BLOCK_CACHE_SIZE`` + ``IDS_BLOCK_CACHE_SIZE``).
FLUSH_MEMTABLE_ABOVE = 512 * 1024
#: An empty key range after every key the journal writes (all its prefixes are ASCII).
_NOTHING = (b"\xff\xfe", b"\xff\xff")


def memory_usage(db: Engine) -> int:
    """LevelDB's own estimate of its memory: its memtables and its block caches, bytes."""
    return db.memory_usage()


def flush_memtable(db: Engine) -> bool:
    """Write LevelDB's memtable out to a table when it holds more than
    ``FLUSH_MEMTABLE_ABOVE``, so that its memory is freed (a memtable is freed only once
    flushed, and otherwise stays until later writes fill it); whether it did. Blocks
    until the flush is done: call it in a journal thread. ``compact_range`` of a range
    holding no key flushes the memtable first, then finds nothing to compact."""
    if memory_usage(db) <= BLOCK_CACHE_SIZE + IDS_BLOCK_CACHE_SIZE + FLUSH_MEMTABLE_ABOVE:
        return False
    db.compact_range(start=_NOTHING[0], stop=_NOTHING[1])
    return True


def first_event_seq(db: Any) -> int | None:
    with db.iterator(prefix=P_EVENT, include_value=False) as it:
        for key in it:
            return key_seq(key)
    return None


def last_event_seq(db: Any) -> int | None:
    with db.iterator(prefix=P_EVENT, include_value=False, reverse=True) as it:
        for key in it:
            return key_seq(key)
    return None
