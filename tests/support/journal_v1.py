"""A v1 journal (the SQLite schema of argbridge's first release), written directly, for
the migration tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from argbridge.events import CloudEvent

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    subject TEXT, size INTEGER NOT NULL, body BLOB NOT NULL, appended_at REAL NOT NULL);
CREATE TABLE tombstones (id TEXT PRIMARY KEY, appended_at REAL NOT NULL);
CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE retries (
    sink TEXT NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
    attempt INTEGER NOT NULL, due_at REAL NOT NULL, last_error TEXT,
    PRIMARY KEY (sink, event_id));
CREATE INDEX retries_due ON retries (sink, due_at);
CREATE TABLE dead_letters (
    dlid INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, event_id TEXT NOT NULL,
    seq INTEGER NOT NULL, body BLOB NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL);
PRAGMA user_version=1;
"""


def write_v1(
    path: Path,
    events: Sequence[CloudEvent],
    *,
    first_seq: int = 1,
    appended_at: float = 1_000.0,
    tombstones: Sequence[tuple[str, float]] = (),
    cursors: dict[str, int] | None = None,
    retries: Sequence[tuple[str, int, CloudEvent, int, float, str | None]] = (),
    dead_letters: Sequence[tuple[str, int, CloudEvent, str, int, float]] = (),
    state: dict[str, str] | None = None,
) -> None:
    """A v1 journal whose retained events are ``events`` from seq ``first_seq`` on (the
    ones before were deleted by retention)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    if first_seq > 1:
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (first_seq - 1,)
        )
    conn.executemany(
        "INSERT INTO events (id, type, subject, size, body, appended_at) VALUES (?,?,?,?,?,?)",
        [
            (e.id, e.type, e.subject, len(e.to_json()), e.to_json(), appended_at + i)
            for i, e in enumerate(events)
        ],
    )
    conn.executemany("INSERT INTO tombstones VALUES (?, ?)", tombstones)
    conn.executemany("INSERT INTO cursors VALUES (?, ?)", (cursors or {}).items())
    conn.executemany(
        "INSERT INTO retries VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(s, e.id, seq, e.to_json(), a, due, err) for s, seq, e, a, due, err in retries],
    )
    conn.executemany(
        "INSERT INTO dead_letters (sink, event_id, seq, body, reason, attempts, failed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(s, e.id, seq, e.to_json(), r, a, at) for s, seq, e, r, a, at in dead_letters],
    )
    conn.executemany("INSERT INTO state VALUES (?, ?, 5.0)", (state or {}).items())
    conn.execute("COMMIT")
    conn.close()
