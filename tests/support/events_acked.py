"""A fake of the :class:`~argbridge.cluster.roles.EventsAcked` role: the test says which
journal seq the events topic has acked (:meth:`FakeEventsAcked.ack`); waiters wake on it."""

from __future__ import annotations

import anyio


class FakeEventsAcked:
    def __init__(self, acked: int = 0) -> None:
        self._acked = acked
        self._moved = anyio.Event()

    def acked_seq(self) -> int:
        return self._acked

    async def wait_acked(self, seq: int) -> None:
        while self._acked < seq:
            await self._moved.wait()

    def ack(self, seq: int) -> None:
        if seq > self._acked:
            self._acked = seq
            self._moved.set()
            self._moved = anyio.Event()
