"""One daemon per state dir: an exclusive ``flock`` on ``<state_dir>/argbridge.lock``.

Owns: taking the lock (non-blocking) and writing the holder's pid into the lock file,
and the :class:`StateDirLocked` error naming the pid that holds it. ``flock`` locks
belong to the open file, so the kernel drops the lock when the holder exits, however
it exits (SIGKILL included): a stale lock file never blocks a restart. Two ``App``
instances in one process conflict too (each opens the file itself).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from argbridge.errors import ArgbridgeError

LOCK_NAME = "argbridge.lock"


class StateDirLocked(ArgbridgeError):
    """Another process holds the state dir's lock; ``pid`` is that process (or ``None``)."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(
            f"state dir {state_dir} is in use by {holder} "
            f"(lock {state_dir / LOCK_NAME}); one daemon per state dir"
        )


class StateDirLock:
    """``with StateDirLock(path):`` holds the lock until the block ends."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateDirLocked` (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirLocked(self.state_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
