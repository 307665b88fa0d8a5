"""The journal's storage engine: two LevelDB databases behind one key-value interface.

The journal's code reads and writes keys (``journal/store.py`` names them); the
:class:`Engine` puts each key in one of two LevelDB databases by its prefix:

* the **log** (``<path>``): events ``e<seq>``, cursors, retries, dead letters, state
  and ``m:*``. Every group commit is ONE synced write batch of it (one ``fdatasync``).
* the **index** (``<path>/ids``): the dedupe ids ``i<id>`` and the tombstone queue
  ``t<seq>``, plus ``m:ids_seq``, the highest event seq whose id it holds.

Why two (issue 17 item 6, bench/bench_engine_compaction.py): in one database every
memtable flush holds both the ascending event keys and the random id keys, so every
level-0 table spans from the newest events to the last id, and LevelDB's compactions
rewrote the ids, and with them the event bodies they sat beside, again and again (32 µs
of compaction CPU per event at 240,000 events, 60-72 past 600,000; the daemon's
compaction thread rose from 0.008 to 0.035-0.11 core over a 12-minute soak). Kept
apart, the log's tables hold ascending keys only and move down the levels without being
rewritten, and the index compacts its small records on its own. The log's other keys
(cursors, state, ``m:*``) sort after the events (``k``, ``l``, ``m``, ... > ``e``), so a
level-0 table's range starts at its first event and no older event table overlaps it.

**The index is derived data.** It is written after the log's synced write, unsynced
(its write-ahead log is written, not synced), with ``m:ids_seq`` in the same batch; the
log's events are the truth. At every open, the index catches up from the log: the ids
of the events after ``m:ids_seq`` are written again. A SIGKILL between the two writes,
or a power loss that takes the index's unsynced tail, therefore loses no id: LevelDB
replays a log's whole batches in order, so the index is some earlier state, and the
catch-up fills in the rest. So the append path keeps ONE ``fdatasync`` per group.

Retention is the exception: its tombstones and expired ids (every index delete, every
``t`` key) are written to the index FIRST, synced, then the log deletes the events.
The ids of deleted events can no longer be rebuilt from the log, so they must be
durable before the events go. A crash in between leaves tombstones for events still in
the log; the next retention writes the same keys again.

A failed write of the index after the log's (a full disk) fails the group's write as a
whole: the writer reopens the engine, whose open catches the index up from the log, and
finds the group's token in the log (it landed). So a lookup never misses an id that the
log holds once the writer commits again.

Format 3 is this layout. A format-2 journal (one database, cursors under ``c`` and dead
letters under ``d``) is upgraded at open: the index is built from its ``i``/``t`` keys,
then one synced batch renames the cursor and dead-letter keys and sets format 3 (a
crash before it leaves format 2: the upgrade starts over), then the old index keys are
deleted from the log in chunks (at every open until none is left). The upgrade is one
way: take ``argbridge journal backup DIR`` before it to be able to roll back.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel

from argbridge.errors import JournalError
from argbridge.journal import store
from argbridge.logging import get_logger

_log = get_logger(component="journal")

FORMAT_VERSION = b"3"
#: The index database's directory, inside the log's.
IDS_DIR = "ids"
#: In the index: the highest event seq whose id it holds.
K_IDS_SEQ = b"m:ids_seq"
#: Key prefixes of the index (first bytes).
_ID, _TOMB, _EVENT = store.P_ID[0], store.P_TOMB[0], store.P_EVENT[0]
#: Format 2's prefixes that sorted before the events.
V2_CURSOR, V2_DEAD = b"c", b"d"
#: Keys per write batch while upgrading or catching up.
CHUNK = 10_000


def _is_index(key: bytes) -> bool:
    return key[0] in (_ID, _TOMB)


class _Chain:
    """Two plyvel iterators one after the other (a scan of every key)."""

    def __init__(self, first: Any, second: Any) -> None:
        self._its = [first, second]

    def __iter__(self) -> Iterator[Any]:
        for it in self._its:
            yield from it

    def __enter__(self) -> Iterator[Any]:
        return iter(self)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for it in self._its:
            it.close()


class EngineBatch:
    """The writes of one group, split between the two databases (see the module doc)."""

    def __init__(self, engine: Engine, *, sync: bool) -> None:
        self._engine = engine
        self._log = engine.log.write_batch(sync=sync)
        self._before: Any = None  # tombstones and index deletes: synced, before the log
        self._after: Any = None  # new ids: after the log, unsynced, with m:ids_seq
        self._last_event: bytes | None = None  # the highest event key put
        self._log_ops = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.apply({key: value})

    def delete(self, key: bytes) -> None:
        self.apply({key: None})

    def apply(self, writes: dict[bytes, bytes | None]) -> None:
        """Add ``writes`` (``None``: delete), in order."""
        engine = self._engine
        log_put, log_delete = self._log.put, self._log.delete
        last_event, n = self._last_event, 0
        for key, value in writes.items():
            first = key[0]
            if first == _ID:
                if value is None:
                    if self._before is None:
                        self._before = engine.ids.write_batch(sync=True)
                    self._before.delete(key)
                else:
                    if self._after is None:
                        self._after = engine.ids.write_batch(sync=False)
                    self._after.put(key, value)
            elif first == _TOMB:
                if self._before is None:
                    self._before = engine.ids.write_batch(sync=True)
                if value is None:
                    self._before.delete(key)
                else:
                    self._before.put(key, value)
            elif value is None:
                log_delete(key)
                n += 1
            else:
                if first == _EVENT and (last_event is None or key > last_event):
                    last_event = key
                log_put(key, value)
                n += 1
        self._last_event, self._log_ops = last_event, self._log_ops + n

    def write(self) -> None:
        if self._before is not None:
            self._before.write()
        if self._log_ops:
            self._log.write()
        after = self._after
        if self._last_event is not None:
            if after is None:
                after = self._after = self._engine.ids.write_batch(sync=False)
            after.put(K_IDS_SEQ, store.pack_u64(store.key_seq(self._last_event)))
        if after is not None:
            after.write()

    def __enter__(self) -> EngineBatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.write()


class Engine:
    """The journal's two LevelDB databases (``log``, ``ids``), routed by key prefix, with
    the subset of plyvel's ``DB`` interface the journal uses."""

    def __init__(self, log: Any, ids: Any, path: Path) -> None:
        self.log = log
        self.ids = ids
        self.path = path

    @property
    def dbs(self) -> tuple[Any, Any]:
        return self.log, self.ids

    @property
    def closed(self) -> bool:
        return bool(self.log.closed)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = (self.ids if _is_index(key) else self.log).get(key)
        return value

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        with self.write_batch(sync=sync) as batch:
            batch.put(key, value)

    def write_batch(self, *, sync: bool = False) -> EngineBatch:
        return EngineBatch(self, sync=sync)

    def iterator(self, **kwargs: Any) -> Any:
        """plyvel's ``iterator``, on the database of its ``prefix`` (or ``start``); with
        neither, every key of both (the log's, then the index's)."""
        where = kwargs.get("prefix") or kwargs.get("start")
        if where is None:
            return _Chain(self.log.iterator(**kwargs), self.ids.iterator(**kwargs))
        return (self.ids if _is_index(where) else self.log).iterator(**kwargs)

    def memory_usage(self) -> int:
        """LevelDB's estimate of both databases' memtables and block caches, bytes."""
        total = 0
        for db in self.dbs:
            raw = db.get_property(b"leveldb.approximate-memory-usage")
            total += int(raw) if raw else 0
        return total

    def compact_range(self, *, start: bytes, stop: bytes) -> None:
        for db in self.dbs:
            db.compact_range(start=start, stop=stop)

    def close(self) -> None:
        for db in self.dbs:
            db.close()


def open_leveldb(
    path: Path,
    *,
    create: bool,
    compression: store.Compression,
    write_buffer: int,
    cache: int,
    bloom_bits: int = store.BLOOM_BITS,
) -> Any:
    """One LevelDB database with the journal's options (bloom filters, table sizes)."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return plyvel.DB(
            str(path),
            create_if_missing=create,
            bloom_filter_bits=bloom_bits,
            write_buffer_size=write_buffer,
            lru_cache_size=cache,
            max_open_files=store.MAX_OPEN_FILES,
            block_size=store.BLOCK_SIZE,
            max_file_size=store.MAX_FILE_SIZE,
            compression=None if compression == "none" else "snappy",
        )
    except (plyvel.Error, OSError) as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from exc


def open_db(
    path: Path,
    *,
    create: bool = True,
    compression: store.Compression = "snappy",
    logger: Any = None,
) -> Engine:
    """Open (or create) the journal at ``path``: upgrade a format-2 journal, catch the
    index up from the log (see the module doc).

    ``compression`` applies to the tables written from now on; LevelDB reads tables of
    either kind, so the setting can change between runs. ``none``: LevelDB's compactions
    cost about half the CPU and the tables 2-3x the disk of snappy on JSON events
    (bench/bench_engine_compaction.py; docs/operations.md, resource bounds). The log's
    memtable and block cache (``store.WRITE_BUFFER_SIZE``, ``store.BLOCK_CACHE_SIZE``)
    count in the daemon's RSS (issue 17): measured with bench_bounds --probe, 16 MiB +
    8 MiB held 16-25 MiB 30 s after a burst, 4 MiB + 2 MiB 5-8 MiB, for the same append
    throughput. The cache serves little: a sink reads the newest events (memtable),
    dedupe misses stop at the bloom filters. ``logger``: the structlog logger of the upgrade's
    and the catch-up's lines (the journal's by default)."""
    say = logger if logger is not None else _log
    log = open_leveldb(
        path,
        create=create,
        compression=compression,
        write_buffer=store.WRITE_BUFFER_SIZE,
        cache=store.BLOCK_CACHE_SIZE,
    )
    ids: Any = None
    try:
        version = log.get(store.K_VERSION)
        if version is None:
            if any(True for _ in log.iterator(include_value=False)):
                raise JournalError(f"cannot open journal {path}: not an argbridge journal")
        elif version not in (FORMAT_VERSION, b"2"):
            raise JournalError(
                f"{path}: journal format {version.decode(errors='replace')} is not one "
                f"this argbridge understands ({FORMAT_VERSION.decode()}, or 2 to upgrade)"
            )
        if version == b"2":
            shutil.rmtree(path / IDS_DIR, ignore_errors=True)  # a crashed upgrade's
        ids = open_leveldb(
            path / IDS_DIR,
            create=True,
            compression=compression,
            write_buffer=store.IDS_WRITE_BUFFER_SIZE,
            cache=store.IDS_BLOCK_CACHE_SIZE,
            bloom_bits=store.IDS_BLOOM_BITS,
        )
        engine = Engine(log, ids, path)
        if version is None:
            log.put(store.K_VERSION, FORMAT_VERSION, sync=True)
        elif version == b"2":
            _upgrade_v2(engine, say)
        _drop_v2_index(log)
        catch_up(engine, say)
    except BaseException as exc:
        log.close()
        if ids is not None:
            ids.close()
        if isinstance(exc, plyvel.Error):
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        raise
    return engine


def catch_up(engine: Engine, say: Any = _log) -> int:
    """Write the ids of the log's events after the index's ``m:ids_seq`` into the index
    (after a crash or a failed write); how many."""
    raw = engine.ids.get(K_IDS_SEQ)
    high = store.unpack_u64(raw) if raw else 0
    n = 0
    batch = engine.ids.write_batch()
    with engine.log.iterator(start=store.seq_key(high + 1), stop=store.SEQ_END) as it:
        for key, value in it:
            at, attrs, _ = store.unpack_event(value)
            high = store.key_seq(key)
            batch.put(store.id_key(store.event_id_of(attrs)), store.pack_index(high, at))
            n += 1
            if n % CHUNK == 0:
                batch.put(K_IDS_SEQ, store.pack_u64(high))
                batch.write()
                batch = engine.ids.write_batch()
    if n or raw is None:
        batch.put(K_IDS_SEQ, store.pack_u64(high))
        batch.write()
    if n:
        say.info("journal.index_caught_up", path=str(engine.path), ids=n, seq=high)
    return n


def _upgrade_v2(engine: Engine, say: Any) -> None:
    """Format 2 → 3 (see the module doc); the index directory is fresh."""
    log, ids = engine.log, engine.ids
    say.info("journal.upgrade_started", path=str(engine.path), format_from=2, format_to=3)
    copied = 0
    batch = ids.write_batch()
    for prefix in (store.P_ID, store.P_TOMB):
        with log.iterator(prefix=prefix) as it:
            for key, value in it:
                batch.put(key, value)
                copied += 1
                if copied % CHUNK == 0:
                    batch.write()
                    batch = ids.write_batch()
                    say.info("journal.upgrade_progress", path=str(engine.path), ids=copied)
    last = store.last_event_seq(log)
    raw = log.get(store.K_LAST_SEQ)
    batch.put(K_IDS_SEQ, store.pack_u64(max(last or 0, store.unpack_u64(raw) if raw else 0)))
    batch.write()
    ids.put(K_IDS_SEQ, ids.get(K_IDS_SEQ), sync=True)  # everything above, durable
    with log.write_batch(sync=True) as renames:
        for old, new in ((V2_CURSOR, store.P_CURSOR), (V2_DEAD, store.P_DEAD)):
            with log.iterator(prefix=old) as it:
                for key, value in it:
                    renames.put(new + key[1:], value)
                    renames.delete(key)
        renames.put(store.K_VERSION, FORMAT_VERSION)
    say.info("journal.upgraded", path=str(engine.path), format=3, ids=copied)


def _drop_v2_index(log: Any) -> None:
    """Delete a format-2 journal's index keys left in the log after its upgrade."""
    for prefix in (store.P_ID, store.P_TOMB):
        while True:
            with log.iterator(prefix=prefix, include_value=False) as it:
                keys = [key for key, _ in zip(it, range(CHUNK), strict=False)]
            if not keys:
                break
            with log.write_batch(sync=True) as batch:
                for key in keys:
                    batch.delete(key)
