"""Migration of a v1 journal (one SQLite file, ``state_dir/journal.db``) to LevelDB
(``state_dir/journal``, format 3 since 2026-12-03: ``journal/engine.py``), run on the
first start of a release with a LevelDB journal.

Steps, and what a crash at each leaves:

1. Copy everything (events, tombstones, cursors, retries, dead letters, state) from the
   v1 file, read only, into ``state_dir/journal.migrating``. A crash here leaves the v1
   file untouched and a partial ``journal.migrating``, which the next start removes
   before migrating again.
2. Sync the new databases (the log and its index: the index holds the tombstones'
   ids, which the log cannot rebuild), rename ``journal.migrating`` → ``journal`` (atomic) and sync
   the directory. From here on the new journal is the journal.
3. Rename the v1 file (and any ``-wal``/``-shm``) to ``journal.db.v1-migrated``: kept
   for a rollback to the previous release (docs/operations.md). A crash between 2 and 3
   is finished by the next start.

Stored values change shape: each event is kept as its attributes JSON and its data JSON
(v1 kept the whole CloudEvents JSON); ``appended_at`` is made non-decreasing along seq
(what the event log assumes for retention and replay-since). v1 tombstones keep their
ids and times; they get positions below the first retained event.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from argbridge.errors import JournalError
from argbridge.journal import engine, store
from argbridge.journal.backup import fsync_path, fsync_tree
from argbridge.journal.engine import Engine

V1_NAME = "journal.db"
V2_NAME = "journal"
WORK_NAME = "journal.migrating"
KEPT_SUFFIX = ".v1-migrated"

#: ``progress(what, done, total)``: called after each batch and once per table.
Progress = Callable[[str, int, int], None]


def _split(body: bytes) -> tuple[bytes, bytes]:
    obj = orjson.loads(body)
    data = obj.pop("data", None)
    return orjson.dumps(obj), (b"" if data is None else orjson.dumps(data))


def needs_migration(state_dir: Path) -> bool:
    return (state_dir / V1_NAME).is_file() and not (state_dir / V2_NAME / "CURRENT").is_file()


def migrate(state_dir: Path, progress: Progress | None = None, batch: int = 2000) -> bool:
    """Migrate ``state_dir``'s v1 journal if there is one to migrate; whether it did."""
    v1, v2, work = state_dir / V1_NAME, state_dir / V2_NAME, state_dir / WORK_NAME
    report = progress or (lambda what, done, total: None)
    if (v2 / "CURRENT").is_file():
        if v1.is_file():
            _keep_v1(state_dir)  # a crash after step 2 last time: finish step 3
        return False
    if not v1.is_file():
        return False
    if work.exists():
        shutil.rmtree(work)
    try:
        conn = sqlite3.connect(f"file:{v1}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the v1 journal {v1}: {exc}") from exc
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1):
            raise JournalError(f"{v1}: v1 journal schema {version} is not one this can migrate")
        db = engine.open_db(work)
        try:
            _copy(conn, db, report, batch)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise JournalError(f"migrating the v1 journal {v1} failed: {exc}") from exc
    finally:
        conn.close()
    fsync_tree(work / engine.IDS_DIR)
    fsync_tree(work)
    os.rename(work, v2)
    fsync_path(state_dir)
    _keep_v1(state_dir)
    report("done", 1, 1)
    return True


def _keep_v1(state_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        old = state_dir / (V1_NAME + suffix)
        if old.exists():
            os.rename(old, state_dir / (V1_NAME + KEPT_SUFFIX + suffix))
    fsync_path(state_dir)


def _copy(conn: sqlite3.Connection, db: Engine, report: Progress, batch: int) -> None:
    count = conn.execute
    total = count("SELECT COUNT(*) FROM events").fetchone()[0]
    seqrow = count("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    max_seq = count("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    last_seq = max(max_seq, seqrow[0] if seqrow else 0)
    done, last_at, after = 0, 0.0, 0
    report("events", 0, total)
    while True:
        rows = count(
            "SELECT seq, id, body, appended_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, batch),
        ).fetchall()
        if not rows:
            break
        with db.write_batch() as wb:
            for seq, event_id, body, appended_at in rows:
                last_at = max(last_at, float(appended_at))
                attrs, data = _split(body)
                wb.put(store.seq_key(seq), store.pack_event(last_at, attrs, data))
                wb.put(store.id_key(event_id), store.pack_index(seq, last_at))
        after = rows[-1][0]
        done += len(rows)
        report("events", done, total)
    tombs = count("SELECT id, appended_at FROM tombstones ORDER BY appended_at").fetchall()
    with db.write_batch() as wb:
        for k, (event_id, appended_at) in enumerate(tombs, start=1):
            # Positions 1..k are below every retained event (k <= events deleted).
            wb.put(store.P_TOMB + store.pack_u64(k), store.pack_tomb(appended_at, event_id))
            wb.put(store.id_key(event_id), store.pack_index(k, appended_at))
        for sink, seq in count("SELECT sink, seq FROM cursors"):
            wb.put(store.cursor_key(sink), store.pack_u64(seq))
        for key, value, updated_at in count("SELECT key, value, updated_at FROM state"):
            wb.put(store.state_key(key), store.pack_state(updated_at or 0.0, value))
        wb.put(store.K_LAST_SEQ, store.pack_u64(last_seq))
    report("tombstones", len(tombs), len(tombs))
    retries = count(
        "SELECT sink, event_id, seq, body, attempt, due_at, last_error FROM retries"
    ).fetchall()
    with db.write_batch() as wb:
        for sink, event_id, seq, body, attempt, due_at, error in retries:
            meta = {"seq": seq, "attempt": attempt, "due_at": due_at, "last_error": error}
            wb.put(store.retry_key(sink, event_id), store.pack_parts(meta, *_split(body)))
            wb.put(store.due_key(sink, due_at, event_id), b"")
    report("retries", len(retries), len(retries))
    letters = count(
        "SELECT dlid, sink, event_id, seq, body, reason, attempts, failed_at FROM dead_letters"
    ).fetchall()
    with db.write_batch(sync=True) as wb:
        for dlid, sink, event_id, seq, body, reason, attempts, failed_at in letters:
            meta = {
                "sink": sink,
                "event_id": event_id,
                "seq": seq,
                "reason": reason,
                "attempts": attempts,
                "failed_at": failed_at,
            }
            wb.put(store.dead_key(dlid), store.pack_parts(meta, *_split(body)))
    report("dead letters", len(letters), len(letters))


def main(argv: list[str] | None = None) -> int:
    """``python -m argbridge.journal.migrate STATE_DIR``: migrate, printing progress."""
    parser = argparse.ArgumentParser(description="migrate a v1 journal to LevelDB (format 3)")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args(argv)

    def show(what: str, done: int, total: int) -> None:
        print(f"migrating {what}: {done}/{total}", flush=True)

    try:
        migrated = migrate(args.state_dir, show, args.batch)
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("migrated" if migrated else "nothing to migrate", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
