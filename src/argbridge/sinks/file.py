"""The ``file`` sink: CloudEvents as JSON lines, rotated by size.

The embedded default and a debugging aid. A batch is written, flushed and (by default)
fsynced before ``deliver`` returns, so the journal cursor only moves past events that
are on disk. Rotation renames ``events.jsonl`` to ``events.jsonl.1`` (shifting older
ones up to ``keep``) once the file exceeds ``rotate_bytes``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

import anyio

from argbridge.config.settings import Settings
from argbridge.config.sinks import FileSinkConfig
from argbridge.sinks.base import Delivery, Health, SinkContext


class FileSink:
    """Appends one JSON line per delivered event."""

    def __init__(self, config: FileSinkConfig, ctx: SinkContext, settings: Settings) -> None:
        self.name = ctx.name
        self.config = config
        self.ctx = ctx
        path = config.path
        self.path = path if path.is_absolute() else settings.state_dir / path
        self._fh: IO[bytes] | None = None
        self._size = 0

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")
        self._size = self._fh.tell()

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        data = b"".join(d.event.to_json() + b"\n" for d in batch)
        await anyio.to_thread.run_sync(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._fh is None:
            self._open()
        assert self._fh is not None
        if self._size and self._size + len(data) > self.config.rotate_bytes:
            self._rotate()
        assert self._fh is not None
        self._fh.write(data)
        self._fh.flush()
        if self.config.fsync:
            os.fsync(self._fh.fileno())
        self._size += len(data)

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        keep = self.config.keep
        if keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open()

    async def aclose(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def health(self) -> Health:
        return Health(self._fh is not None, "open" if self._fh is not None else "not started")
