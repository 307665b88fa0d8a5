"""A consistent copy of a journal, also while a daemon has it open.

LevelDB allows one process per database (``LOCK``), so a backup or an operator's look
inside cannot open the daemon's database. It can copy it: LevelDB never changes a table
file (``*.ldb``) once written, appends to its write-ahead log (``*.log``), and records
which tables and which log are live in the ``MANIFEST`` named by ``CURRENT``. A copy is
consistent when the MANIFEST did not change while the files were copied (same
``CURRENT``, same MANIFEST size): then every table it names was there, and the log copy
is a prefix of the live log. A prefix may end in a torn record; LevelDB's recovery drops
that record, as after a crash, and each record is a whole group commit (atomic). The
copy is a state the journal was in at one instant, like the disk after a SIGKILL.

When the MANIFEST changes under the copy (a memtable flush or compaction), it starts
over, up to ``attempts`` times.

The journal is two databases (``journal/engine.py``): the index (``ids/``) is copied
first, then the log. Every write reaches the log before the index, so the index copy is
never ahead of the log copy, and its open catches it up from the log, as after a crash.
(A retention that runs between the two copies leaves tombstones missing for the events
it deleted: their ids are not expired from the copy's index, and nothing is lost.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from argbridge.errors import JournalError
from argbridge.journal.engine import IDS_DIR


def _manifest_state(src: Path) -> tuple[str, int]:
    current = (src / "CURRENT").read_text().strip()
    return current, (src / current).stat().st_size


def _copy_file(src: Path, dst: Path, *, link: bool) -> None:
    if link and src.suffix in (".ldb", ".sst"):
        try:
            os.link(src, dst)  # immutable: a hard link is a copy
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def copy_journal(src: Path, dst: Path, *, link: bool = False, attempts: int = 50) -> None:
    """Copy the journal ``src`` into the new directory ``dst`` (consistently, even while
    another process writes it): its index, then its log. ``link``: hard-link the
    immutable tables (same file system only; a plain copy otherwise)."""
    if not (src / "CURRENT").is_file():
        raise JournalError(f"{src} is not a journal (no LevelDB CURRENT file)")
    if dst.exists() and any(dst.iterdir()):
        raise JournalError(f"{dst} exists and is not empty")
    if (src / IDS_DIR / "CURRENT").is_file():
        _copy_db(src / IDS_DIR, dst / IDS_DIR, link=link, attempts=attempts)
    _copy_db(src, dst, link=link, attempts=attempts)
    fsync_path(dst)


def _clear(dst: Path) -> None:
    """Remove a failed attempt's files (not the index copied before)."""
    for child in dst.iterdir():
        if child.name != IDS_DIR:
            child.unlink()


def _copy_db(src: Path, dst: Path, *, link: bool, attempts: int) -> None:
    """Copy the LevelDB database ``src`` into ``dst`` (see the module doc)."""
    for _ in range(attempts):
        dst.mkdir(parents=True, exist_ok=True)
        try:
            before = _manifest_state(src)
            names = sorted(n for n in os.listdir(src) if n != IDS_DIR)
            # Tables first, then the log, then MANIFEST and CURRENT: whatever the log
            # holds beyond the MANIFEST's view is replayed from the log copy.
            order = sorted(
                (n for n in names if n not in ("LOCK", "LOG", "LOG.old")),
                key=lambda n: (not n.endswith((".ldb", ".sst")), n.endswith(".log"), n),
            )
            for name in order:
                _copy_file(src / name, dst / name, link=link)
            (dst / "CURRENT").write_text(before[0] + "\n")
            after = _manifest_state(src)
        except FileNotFoundError:
            after = ("", -1)  # a file went away: something changed under us
        if after == before and (dst / before[0]).stat().st_size >= before[1]:
            fsync_tree(dst)
            return
        _clear(dst)
    raise JournalError(f"could not copy {src} consistently in {attempts} attempts (busy)")


def fsync_tree(path: Path) -> None:
    """fsync every file directly in ``path``, then ``path`` itself."""
    for child in path.iterdir():
        if child.is_file():
            fsync_path(child)
    fsync_path(path)


def fsync_path(path: Path) -> None:
    """fsync ``path`` (a file or a directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def snapshot(src: Path) -> Iterator[Path]:
    """A throw-away consistent copy of ``src`` (tables hard-linked), for reading it while
    a daemon holds it; removed on exit."""
    where: Path | None = src.parent  # same file system: the tables can be hard-linked
    if not os.access(src.parent, os.W_OK):
        where = None  # a copy in the system's temporary directory instead
    with tempfile.TemporaryDirectory(prefix="argbridge-journal-", dir=where) as tmp:
        dst = Path(tmp) / "journal"
        copy_journal(src, dst, link=True)
        yield dst
