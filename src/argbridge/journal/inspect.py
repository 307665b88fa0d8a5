"""Looking inside a journal without a daemon: what ``argbridge journal stats|show|find``
print. Synchronous reads of a database opened here (a stopped daemon's, or a
:func:`~argbridge.journal.backup.snapshot` of a running one's)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import structlog

from argbridge.errors import JournalError
from argbridge.journal import engine, store
from argbridge.journal.backup import snapshot
from argbridge.journal.engine import Engine
from argbridge.journal.records import join_body


def _locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text or "temporarily unavailable" in text


def _stderr_log() -> Any:
    """A logger for the engine's lines when a tool opens the journal (an index caught
    up, a format upgrade): to stderr, whatever the process's logging is (stdout is the
    tool's output)."""
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
    )


@contextmanager
def open_for_reading(path: Path) -> Iterator[Engine]:
    """The journal at ``path``; through a snapshot copy when a daemon holds it."""
    if not (path / "CURRENT").is_file():
        raise JournalError(f"{path}: no journal here (no LevelDB CURRENT file)")
    try:
        db = engine.open_db(path, create=False, logger=_stderr_log())
    except JournalError as exc:
        if not _locked(exc):
            raise
        with snapshot(path) as copy:
            db = engine.open_db(copy, create=False, logger=_stderr_log())
            try:
                yield db
            finally:
                db.close()
        return
    try:
        yield db
    finally:
        db.close()


def stats(db: Engine) -> dict[str, Any]:
    """Counts and positions of the journal (a full scan of the keys)."""
    raw = db.get(store.K_LAST_SEQ)
    first, last = store.first_event_seq(db), store.last_event_seq(db)
    counts = dict.fromkeys(("events", "ids", "tombstones", "retries", "dead_letters", "state"), 0)
    prefixes = {
        store.P_EVENT: "events",
        store.P_ID: "ids",
        store.P_TOMB: "tombstones",
        store.P_RETRY: "retries",
        store.P_DEAD: "dead_letters",
        store.P_STATE: "state",
    }
    event_bytes = 0
    for key, value in db.iterator():
        name = prefixes.get(key[:1])
        if name is not None:
            counts[name] += 1
            if name == "events":
                event_bytes += len(value)
    cursors = {
        key[1:].decode(): store.unpack_u64(value)
        for key, value in db.iterator(prefix=store.P_CURSOR)
    }
    last_seq = max(store.unpack_u64(raw) if raw else 0, last or 0)
    return {
        "format": (db.get(store.K_VERSION) or b"?").decode(),
        "last_seq": last_seq,
        "first_retained_seq": first,
        "events": counts["events"],
        "event_bytes": event_bytes,
        "tombstones": counts["tombstones"],
        "cursors": cursors,
        "backlog": {sink: last_seq - seq for sink, seq in cursors.items()},
        "retries": counts["retries"],
        "dead_letters": counts["dead_letters"],
        "state_keys": counts["state"],
    }


def _event_row(seq: int, value: bytes) -> dict[str, Any]:
    at, attrs, data = store.unpack_event(value)
    return {"seq": seq, "appended_at": at, "event": orjson.loads(join_body(attrs, data))}


def show(db: Engine, event_id: str) -> dict[str, Any] | None:
    """The event with ``event_id`` (with its seq), or what the journal knows of its id."""
    raw = db.get(store.id_key(event_id))
    if raw is None:
        return None
    seq, at = store.unpack_index(raw)
    value = db.get(store.seq_key(seq))
    if value is None:
        return {"seq": seq, "appended_at": at, "deleted": True, "tombstone": True}
    return _event_row(seq, value)


def find(db: Engine, subject: str, limit: int = 100) -> list[dict[str, Any]]:
    """Retained events whose ``subject`` is ``subject``, oldest first (a scan)."""
    out = []
    with db.iterator(prefix=store.P_EVENT) as it:
        for key, value in it:
            _, attrs, _ = store.unpack_event(value)
            if orjson.loads(attrs).get("subject") == subject:
                out.append(_event_row(store.key_seq(key), value))
                if len(out) >= limit:
                    break
    return out


def events(db: Engine) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every retained ``(seq, attributes)``, oldest first."""
    with db.iterator(prefix=store.P_EVENT) as it:
        for key, value in it:
            _, attrs, _ = store.unpack_event(value)
            yield store.key_seq(key), orjson.loads(attrs)
