"""``argbridge journal stats|show|find|backup``: look inside the journal, or copy it.

They read the journal's files directly, without the daemon and without LevelDB's own
tools: ``--state-dir`` (or the ``state_dir`` of ``--config``, or
``$ARGBRIDGE_STATE_DIR``, or ``./var``). While a daemon holds the journal they read a
consistent snapshot copy of it (:mod:`argbridge.journal.backup`), so they work on a
running daemon too.

- ``stats``: positions, counts, per-sink cursors and backlog;
- ``show ID``: one event (with its seq and commit time), or that its id is only a
  tombstone now;
- ``find --subject S``: retained events of a subject, oldest first;
- ``backup DIR``: a consistent copy of the journal into the new directory ``DIR``,
  checked by opening it. Restore: stop the daemon, replace ``STATE_DIR/journal`` with
  the copy.

Exit codes: 0 success, 1 not found (``show``/``find``), 2 bad arguments or config, 3 the
journal cannot be read or copied.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from argbridge.errors import JournalError
from argbridge.journal import inspect
from argbridge.journal.backup import copy_journal

EXIT_NOT_FOUND = 1
EXIT_FAILED = 3


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    if args.config:
        from argbridge.cli import load_or_exit

        return load_or_exit(args.config).state_dir
    return Path(os.environ.get("ARGBRIDGE_STATE_DIR", "./var"))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_stats(args: argparse.Namespace, path: Path) -> int:
    with inspect.open_for_reading(path) as db:
        st = inspect.stats(db)
    if args.json:
        _json(st)
        return 0
    first = st["first_retained_seq"]
    print(f"journal {path} (format {st['format']})")
    print(f"  last seq {st['last_seq']}, retained {st['events']} event(s)", end="")
    print(f" from seq {first}" if first else "", end="")
    print(f", {st['event_bytes']:,} bytes; {st['tombstones']} tombstone(s)")
    for sink, seq in sorted(st["cursors"].items()):
        print(f"  sink {sink}: cursor {seq}, backlog {st['backlog'][sink]}")
    print(
        f"  retries {st['retries']}, dead letters {st['dead_letters']}, "
        f"state keys {st['state_keys']}"
    )
    return 0


def cmd_show(args: argparse.Namespace, path: Path) -> int:
    with inspect.open_for_reading(path) as db:
        found = inspect.show(db, args.id)
    if found is None:
        print(f"no event with id {args.id!r} in the journal", file=sys.stderr)
        return EXIT_NOT_FOUND
    if found.get("tombstone"):
        print(
            f"event {args.id} (seq {found['seq']}, appended {_when(found['appended_at'])}) "
            "was delivered and deleted by retention; its id is kept for dedupe",
        )
        return 0
    _json(found)
    return 0


def cmd_find(args: argparse.Namespace, path: Path) -> int:
    with inspect.open_for_reading(path) as db:
        rows = inspect.find(db, args.subject, args.limit)
    for row in rows:
        if args.json:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        else:
            ev = row["event"]
            print(f"{row['seq']:>10}  {_when(row['appended_at'])}  {ev['type']}  {ev['id']}")
    if not rows:
        print(f"no retained event with subject {args.subject!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0


def cmd_backup(args: argparse.Namespace, path: Path) -> int:
    dest = Path(args.dir)
    copy_journal(path, dest)
    with inspect.open_for_reading(dest) as db:  # the copy opens: recovery ran on it
        st = inspect.stats(db)
    print(
        f"backed up {path} to {dest}: last seq {st['last_seq']}, {st['events']} event(s), "
        f"cursors {st['cursors']}"
    )
    return 0


def _run(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        path = _state_dir(args) / "journal"
        try:
            code: int = fn(args, path)
        except JournalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return code

    return run


def _common(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", help="the daemon's state_dir (default: from --config)")
    where.add_argument("--config", "-c", help="take state_dir from this configuration")


def register(sub: Any) -> None:
    journal = sub.add_parser("journal", help="look inside the journal, or back it up")
    jsub = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    p = jsub.add_parser("stats", help="positions, counts, cursors and backlogs")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run(cmd_stats))
    p = jsub.add_parser("show", help="one event by its id")
    _common(p)
    p.add_argument("id", help="the CloudEvent id")
    p.set_defaults(func=_run(cmd_show))
    p = jsub.add_parser("find", help="retained events of a subject")
    _common(p)
    p.add_argument("--subject", required=True, help="the CloudEvent subject")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_run(cmd_find))
    p = jsub.add_parser("backup", help="a consistent copy (also of a running daemon's)")
    _common(p)
    p.add_argument("dir", help="new directory for the copy")
    p.set_defaults(func=_run(cmd_backup))
