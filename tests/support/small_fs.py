"""A small filesystem of a test's own, to fill up: a tmpfs with a size, else a
loop-mounted ext4 image; ``None`` (with the reason) where this process cannot mount.

Mounting needs CAP_SYS_ADMIN (root outside a user namespace); unmounted on exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _run(*cmd: str) -> tuple[bool, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


@contextlib.contextmanager
def small_filesystem(where: Path, size_kib: int) -> Iterator[tuple[Path | None, str]]:
    """``(mount point, how)`` or ``(None, why not)``."""
    mnt = where / "small-fs"
    mnt.mkdir()
    reasons = []
    how = ""
    if shutil.which("mount") is None:
        yield None, "no mount(8) on this machine"
        return
    ok, err = _run("mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(mnt))
    if ok:
        how = f"tmpfs size={size_kib}k"
    else:
        reasons.append(f"tmpfs: {err}")
        image = where / "small-fs.img"
        with open(image, "wb") as fh:
            fh.truncate(size_kib * 1024)
        ok, err = _run("mkfs.ext4", "-q", "-F", str(image))
        if ok:
            ok, err = _run("mount", "-o", "loop", str(image), str(mnt))
        if ok:
            how = f"loop-mounted ext4 image of {size_kib} KiB"
        else:
            reasons.append(f"loop image: {err}")
    if not ok:
        yield None, "cannot mount a small filesystem here (" + "; ".join(reasons) + ")"
        return
    try:
        yield mnt, how
    finally:
        _run("umount", "-l", str(mnt))


def fill(folder: Path) -> Path:
    """Write a filler file in ``folder`` until the filesystem is full; returns it."""
    filler = folder / "filler"
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler
