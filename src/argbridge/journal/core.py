"""Opening the journal: the LevelDB database, its in-memory mirror, the writer and the
three roles (event log, sink ledger, state store), behind :class:`Journal`.

:class:`Journal` owns the lifecycle (``async with Journal(path, sinks=...)``) and hands
out the roles (:attr:`Journal.log`, :attr:`Journal.ledger`, :attr:`Journal.state`);
its other methods forward to them, for the runtime, the control API and tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.errors import JournalClosed, JournalError
from argbridge.events import CloudEvent
from argbridge.journal import engine, store
from argbridge.journal.backpressure import PauseSignal
from argbridge.journal.engine import Engine
from argbridge.journal.ledger import SinkLedger
from argbridge.journal.log import EventLog
from argbridge.journal.ops import Mirror, TrackSinks
from argbridge.journal.records import (
    AppendStatus,
    DeadLetter,
    EncodedEvent,
    JournalRecord,
    JournalStats,
    RetryItem,
    body_size,
)
from argbridge.journal.roles import ExactlyOnceSinkView, SinkView, SourceView
from argbridge.journal.sizes import SizeIndex
from argbridge.journal.state import StateStore
from argbridge.journal.writer import ReadThread, Writer
from argbridge.logging import get_logger

_log = get_logger(component="journal")


def load_mirror(db: Engine, sinks: Sequence[str], sizes: SizeIndex | None = None) -> Mirror:
    """Rebuild the in-memory mirror from the database; add cursors for new sinks (at 0:
    the oldest retained event) and drop those of removed sinks (durably). ``sizes`` is
    filled with the backlog's event sizes on the way."""
    m = Mirror()
    raw = db.get(store.K_LAST_SEQ)
    last = store.last_event_seq(db)
    m.last_seq = max(store.unpack_u64(raw) if raw else 0, last or 0)
    m.first_seq = store.first_event_seq(db) or 0
    if last is not None:
        value = db.get(store.seq_key(last))
        assert value is not None
        m.last_appended_at = store.event_appended_at(value)
    known = {
        key[1:].decode(): store.unpack_u64(value)
        for key, value in db.iterator(prefix=store.P_CURSOR)
    }
    with db.write_batch(sync=True) as batch:
        for sink in sinks:
            if sink not in known:
                batch.put(store.cursor_key(sink), store.pack_u64(0))
                known[sink] = 0
        for sink in set(known) - set(sinks):
            batch.delete(store.cursor_key(sink))  # a removed sink must not hold retention
            del known[sink]
    m.cursors = {s: known[s] for s in sinks}
    for key in db.iterator(prefix=store.P_RETRY, include_value=False):
        sink = key[1:].split(b"\0", 1)[0].decode()
        m.retries[sink] = m.retries.get(sink, 0) + 1
    for key, value in db.iterator(prefix=store.P_DEAD):
        meta, _ = store.unpack_parts(value)
        m.dead_letters[meta["sink"]] = m.dead_letters.get(meta["sink"], 0) + 1
        m.next_dlid = store.key_seq(key) + 1
    if sizes is not None:
        sizes.reset(m.min_cursor() if m.cursors else m.last_seq)
    if m.cursors:
        low = m.min_cursor()
        for key, value in db.iterator(start=store.seq_key(low + 1), stop=store.SEQ_END):
            _, attrs, data = store.unpack_event(value)
            size = body_size(attrs, data)
            m.backlog_bytes += size
            if sizes is not None:
                sizes.extend(store.key_seq(key), (size,))
    return m


class Journal:
    """The durable journal in ``path`` (a LevelDB directory); ``async with`` it."""

    def __init__(
        self,
        path: Path | str,
        *,
        sinks: Iterable[str] = (),
        max_backlog_events: int = 100_000,
        max_backlog_bytes: int = 256 * 1024 * 1024,
        resume_ratio: float = 0.8,
        retain_delivered: float = 3600.0,
        dedupe_window: float = 7 * 86400.0,
        max_group_commit: int = 2048,
        fsync_acks: bool = False,
        group_linger: float = 0.0,
        compression: store.Compression = "snappy",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.path = Path(path)
        self.sinks = tuple(dict.fromkeys(sinks))
        self.clock = clock
        self._settings = {
            "max_backlog_events": max_backlog_events,
            "max_backlog_bytes": max_backlog_bytes,
            "resume_ratio": resume_ratio,
            "retain_delivered": retain_delivered,
            "dedupe_window": dedupe_window,
        }
        self.max_group_commit = max_group_commit
        #: Sync groups of cursor acks only too (``journal.fsync_acks``; see the writer).
        self.fsync_acks = fsync_acks
        #: Gather window of small groups under live traffic (``journal.group_linger``).
        self.group_linger = group_linger
        #: LevelDB's block compression of the tables written (``journal.compression``).
        self.compression: store.Compression = compression
        self._db: Engine | None = None
        self._writer: Writer | None = None
        self._reads: ReadThread | None = None
        self._log: EventLog | None = None
        self._ledger: SinkLedger | None = None
        self._state: StateStore | None = None
        self._pause = PauseSignal(max_backlog_events, max_backlog_bytes, resume_ratio)
        self._final_stats: JournalStats | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        db = await anyio.to_thread.run_sync(
            lambda: engine.open_db(self.path, compression=self.compression)
        )
        sizes = SizeIndex()
        try:
            mirror = await anyio.to_thread.run_sync(load_mirror, db, self.sinks, sizes)
        except BaseException:
            db.close()
            raise
        self._db = db
        writer = Writer(
            db,
            mirror,
            clock=self.clock,
            max_group_commit=self.max_group_commit,
            on_commit=self._on_commit,
            pause=self._pause,
            path=self.path,
            fsync_acks=self.fsync_acks,
            sizes=sizes,
            group_linger=self.group_linger,
            compression=self.compression,
        )
        reads = self._reads = ReadThread(writer)
        self._writer = writer
        self._log = EventLog(
            writer,
            reads,
            clock=self.clock,
            pause=self._pause,
            **self._settings,  # type: ignore[arg-type]
        )
        self._ledger = SinkLedger(writer, reads, self._log)
        self._state = StateStore(writer, reads)
        self._log.update_pause()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Commit whatever is still queued, then close the database."""
        writer = self._writer
        if writer is None or writer.closed:
            return
        self._pause.close()  # appends waiting for room fail (JournalClosed), not hang
        await writer.aclose()
        self._final_stats = self.stats()
        if self._reads is not None:
            await self._reads.close_db()  # never under a running read

    @property
    def max_backlog_events(self) -> int:
        return self._pause.max_events

    async def recheck_space(self) -> bool:
        """Intake held for a full disk: retry at once, or reopen the database and
        release the hold, once the state dir's filesystem has room again (the runtime
        calls this every second). Returns whether intake is no longer held for it."""
        return await self._writer.recheck_space() if self._writer is not None else True

    async def release_memory(self) -> bool:
        """Let the engine give back what it holds for reading (a quiet moment after a
        burst, before the runtime's heap trim): flush LevelDB's memtable when it holds
        more than a little (a memtable is freed only once flushed), then reopen the
        database between two group commits (its open tables' mappings, its block cache
        and its memtable's arena are released; LevelDB has no other way to drop them).
        Measured with ``bench_bounds --phase burst``: the mapped tables (~4.5 MiB after
        the burst's drain) and most of the journal threads' arenas came back. Commits
        wait for the reopen (3-27 ms under a full append load); the flush runs in the
        read thread, in order with the reads. Returns whether the database was reopened;
        a failed reopen is logged and recovered by the writer at once (as after a failed
        write)."""
        writer, reads = self._writer, self._reads
        if writer is None or reads is None or writer.closed:
            return False
        try:
            await reads.run(store.flush_memtable)
        except JournalClosed:
            return False
        except JournalError as exc:
            _log.warning("journal.memtable_flush_failed", error=str(exc))
        return await writer.reopen()

    @property
    def closed(self) -> bool:
        return self._writer is None or self._writer.closed

    def _on_commit(self) -> None:
        if self._log is not None:
            self._log.update_pause()

    # -- roles -------------------------------------------------------------------------

    @property
    def log(self) -> EventLog:
        if self._log is None:
            raise JournalClosed("the journal is not open")
        return self._log

    @property
    def ledger(self) -> SinkLedger:
        if self._ledger is None:
            raise JournalClosed("the journal is not open")
        return self._ledger

    @property
    def state(self) -> StateStore:
        if self._state is None:
            raise JournalClosed("the journal is not open")
        return self._state

    @property
    def pause(self) -> PauseSignal:
        return self._pause

    def for_source(self) -> SourceView:
        """The narrow role a source gets: append, backpressure, state."""
        return SourceView(self.log, self.state)

    def for_sink(self) -> SinkView:
        """The narrow role a sink gets: cursor, reads, acks, retries, dead letters, state."""
        return SinkView(self.ledger, self.log, self.state)

    def for_exactly_once_sink(self) -> ExactlyOnceSinkView:
        """The exactly-once Kafka sink's role (the sink role, a rewind, alerts)."""
        return ExactlyOnceSinkView(self.ledger, self.log, self.state)

    # -- stats -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self.log.last_seq if self._writer is not None else 0

    def backlog(self, sink: str) -> int:
        return self.ledger.backlog(sink)

    def cursor(self, sink: str) -> int:
        return self.ledger.cursor(sink)

    def stats(self) -> JournalStats:
        """In-memory counters (also after the journal closed)."""
        w = self._writer
        if w is None:
            return JournalStats(0, {}, {}, 0, False, 0, 0, 0)
        if w.closed and self._final_stats is not None:
            return self._final_stats
        m = w.mirror
        return JournalStats(
            last_seq=m.last_seq,
            cursors=dict(m.cursors),
            backlog_events={s: m.last_seq - c for s, c in m.cursors.items()},
            backlog_bytes=m.backlog_bytes if m.cursors else 0,
            paused=self._pause.is_paused,
            commits=w.commits,
            appended=w.appended,
            duplicates=w.duplicates,
            syncs=w.syncs,
            first_seq=m.first_seq,
            retries={s: n for s, n in m.retries.items() if n},
            dead_letters={s: n for s, n in m.dead_letters.items() if n},
        )

    # -- today's API, forwarded to the roles -------------------------------------------

    async def append(self, event: CloudEvent, *, wait: bool = True) -> AppendStatus:
        return await self.log.append(event, wait=wait)

    async def alert(self, event: CloudEvent) -> AppendStatus:
        """A component's own alert event (what the exactly-once sink role offers for it)."""
        return await self.log.append(event)

    async def append_many(
        self, events: Sequence[CloudEvent], *, wait: bool = True
    ) -> list[AppendStatus]:
        return await self.log.append_many(events, wait=wait)

    async def append_encoded(
        self,
        items: Sequence[EncodedEvent],
        *,
        wait: bool = True,
        state: tuple[str, str] | None = None,
    ) -> list[AppendStatus]:
        return await self.log.append_encoded(items, wait=wait, state=state)

    async def wait_for_events(self, after_seq: int) -> None:
        if self._writer is None:
            raise JournalClosed("the journal is closed")
        await self.log.wait_for_events(after_seq)

    async def read(
        self, sink: str, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        return await self.ledger.read(sink, limit, max_bytes)

    async def read_after(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[JournalRecord]:
        return await self.log.read_after(after_seq, limit, max_bytes)

    async def first_seq_since(self, since: float) -> int | None:
        return await self.log.first_seq_since(since)

    async def run_retention(self, limit: int = 10_000) -> int:
        return await self.log.run_retention(limit)

    async def ack(self, sink: str, seq: int, *, behind: bool = False) -> None:
        await self.ledger.ack(sink, seq, behind=behind)

    async def rewind(self, sink: str, seq: int) -> None:
        await self.ledger.rewind(sink, seq)

    async def schedule_retry(
        self, sink: str, record: JournalRecord | RetryItem, attempt: int, due_at: float, error: str
    ) -> None:
        await self.ledger.schedule_retry(sink, record, attempt, due_at, error)

    async def set_sinks(self, sinks: Iterable[str]) -> None:
        """Track exactly ``sinks`` from now on (a live reload): a new sink starts at the
        oldest retained event, as at open; a removed one no longer holds retention and
        backpressure back. Stop a sink's worker before removing it."""
        wanted = tuple(dict.fromkeys(sinks))
        writer = self._writer
        if writer is None or writer.closed:
            raise JournalClosed("the journal is closed")
        for sink in wanted:
            writer.epochs.setdefault(sink, 0)
        await writer.submit(TrackSinks(wanted))
        self.sinks = wanted
        if self._log is not None:
            self._log.update_pause()

    async def clear_retry(self, sink: str, event_id: str) -> None:
        await self.ledger.clear_retry(sink, event_id)

    async def due_retries(self, sink: str, now: float, limit: int = 100) -> list[RetryItem]:
        return await self.ledger.due_retries(sink, now, limit)

    async def next_retry_due(self, sink: str) -> float | None:
        return await self.ledger.next_retry_due(sink)

    async def count_retries(self, sink: str | None = None) -> int:
        return await self.ledger.count_retries(sink)

    async def dead_letter(
        self, sink: str, record: JournalRecord | RetryItem, reason: str, attempts: int
    ) -> None:
        await self.ledger.dead_letter(sink, record, reason, attempts)

    async def dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]:
        return await self.ledger.dead_letters(sink, dlids=dlids, since=since, limit=limit)

    async def count_dead_letters(self, sink: str | None = None) -> int:
        return await self.ledger.count_dead_letters(sink)

    async def requeue_dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
    ) -> int:
        return await self.ledger.requeue_dead_letters(sink, dlids=dlids, since=since)

    async def get_state(self, key: str) -> str | None:
        return await self.state.get_state(key)

    async def set_state(self, key: str, value: str) -> None:
        await self.state.set_state(key, value)

    async def delete_state(self, key: str) -> None:
        await self.state.delete_state(key)
