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
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from argbridge.errors import JournalError


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
    """Copy the journal database ``src`` into the new directory ``dst`` (consistently,
    even while another process writes it). ``link``: hard-link the immutable tables
    (same file system only; a plain copy otherwise)."""
    if not (src / "CURRENT").is_file():
        raise JournalError(f"{src} is not a journal (no LevelDB CURRENT file)")
    if dst.exists() and any(dst.iterdir()):
        raise JournalError(f"{dst} exists and is not empty")
    for _ in range(attempts):
        dst.mkdir(parents=True, exist_ok=True)
        try:
            before = _manifest_state(src)
            names = sorted(os.listdir(src))
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
            _fsync_tree(dst)
            return
        shutil.rmtree(dst)
    raise JournalError(f"could not copy {src} consistently in {attempts} attempts (busy)")


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        fd = os.open(child, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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
