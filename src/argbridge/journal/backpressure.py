"""Backpressure: when intake pauses, and the hard bound no append ever crosses.

Owns :class:`PauseSignal`, which the journal updates after every group commit with the
slowest sink's backlog (events and bytes, from the writer's in-memory mirror) and which
every source consults (the event log admits each append through it):

* **Soft cap (pause).** At ``max_backlog_events`` events or ``max_backlog_bytes`` bytes
  :attr:`PauseSignal.is_paused` turns on: stream readers stop reading (TCP pushes back
  on the server), webhooks answer 503 + ``Retry-After``. It turns off once the backlog
  is at or below ``resume_ratio`` of both caps.
* **Hard bound (admission).** What was already read when the pause began (a network
  chunk, the reader → committer queue of each stream, webhook requests past their
  check) still has to go somewhere. Each append is *admitted* first: the backlog plus
  the appends admitted but not yet committed may never exceed

      hard_events = max_backlog_events + max(20 % of it, 1,000)
      hard_bytes  = max_backlog_bytes  + max(20 % of it, 1 MiB)

  An append that does not fit waits (streams: the reader stops, TCP pushes back) or,
  when the caller cannot wait (a webhook request), fails with :class:`IntakePaused`
  (503). The bound does not depend on how many streams there are or how fast they send.
  The only excess allowed is a single event larger than the byte slack, admitted alone
  while intake is not paused and nothing else is in flight (else it could never be
  journaled).
* **Holds.** :meth:`PauseSignal.hold` pauses intake for a reason other than the backlog
  (``disk_full``, held by the journal's writer): admission waits until the hold is
  released.

The signal is pure bookkeeping on the event loop: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from argbridge.errors import JournalError

#: The smallest slack above the soft caps, whatever their size.
MIN_SLACK_EVENTS = 1000
MIN_SLACK_BYTES = 1024 * 1024
SLACK_RATIO = 0.2


class IntakePaused(JournalError):
    """An append that may not wait found no room under the hard bound (or a hold)."""


def hard_bound(cap: int, minimum: int) -> int:
    """``cap`` plus the larger of 20 % of it and ``minimum``."""
    return cap + max(int(cap * SLACK_RATIO), minimum)


class PauseSignal:
    """Backpressure flag and admission gate (see the module docstring)."""

    def __init__(
        self,
        max_events: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        resume_ratio: float = 0.8,
        *,
        min_slack_events: int = MIN_SLACK_EVENTS,
        min_slack_bytes: int = MIN_SLACK_BYTES,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.resume_ratio = resume_ratio
        self.hard_events = hard_bound(max_events, min_slack_events)
        self.hard_bytes = hard_bound(max_bytes, min_slack_bytes)
        self._backlog_paused = False
        self._holds: dict[str, str] = {}
        self._resumed = anyio.Event()
        self._resumed.set()
        self._events = 0
        self._bytes = 0
        self._inflight_events = 0
        self._inflight_bytes = 0
        self._space = anyio.Event()
        self._waiters = 0
        self._closed = False
        #: Highest committed backlog (events) seen, for benchmarks and status.
        self.peak_events = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def is_paused(self) -> bool:
        return self._backlog_paused or bool(self._holds)

    @property
    def reason(self) -> str | None:
        """Why intake is paused: ``backlog``, a hold's reason, or ``None``."""
        if self._holds:
            return next(iter(self._holds))
        return "backlog" if self._backlog_paused else None

    @property
    def holds(self) -> dict[str, str]:
        """Active holds: reason → detail."""
        return dict(self._holds)

    @property
    def in_flight(self) -> tuple[int, int]:
        """Events and bytes admitted but not yet committed."""
        return self._inflight_events, self._inflight_bytes

    def update(self, events: int, size: int) -> None:
        """The backlog after a commit (the journal calls this)."""
        shrank = events < self._events or size < self._bytes
        self._events, self._bytes = events, size
        if self._backlog_paused:
            low_events = self.max_events * self.resume_ratio
            low_bytes = self.max_bytes * self.resume_ratio
            paused = not (events <= low_events and size <= low_bytes)
        else:
            paused = events >= self.max_events or size >= self.max_bytes
        self._set_backlog(paused)
        self.peak_events = max(self.peak_events, events)
        if shrank:
            self._wake()

    def hold(self, reason: str, detail: str = "") -> None:
        """Pause intake for ``reason`` until :meth:`release_hold`."""
        was = self.is_paused
        self._holds[reason] = detail
        if not was:
            self._resumed = anyio.Event()

    def release_hold(self, reason: str) -> None:
        if self._holds.pop(reason, None) is None:
            return
        if not self.is_paused:
            self._resumed.set()
        self._wake()

    def close(self) -> None:
        """Wake every waiter (the journal is closing; their append then fails)."""
        self._closed = True
        self._resumed.set()
        self._wake()

    def _set_backlog(self, paused: bool) -> None:
        if paused == self._backlog_paused:
            return
        was = self.is_paused
        self._backlog_paused = paused
        if self.is_paused and not was:
            self._resumed = anyio.Event()
        elif was and not self.is_paused:
            self._resumed.set()

    async def wait_resumed(self) -> None:
        """Return at once when not paused, else once the backlog drains below the mark
        and no hold remains."""
        while self.is_paused and not self._closed:
            await self._resumed.wait()

    # -- admission -----------------------------------------------------------------------

    def _room(self, sizes: Sequence[int]) -> tuple[int, int]:
        """How many of ``sizes`` (from the front) fit now, and their bytes."""
        if self._holds:
            return 0, 0
        free_events = self.hard_events - self._events - self._inflight_events
        free_bytes = self.hard_bytes - self._bytes - self._inflight_bytes
        n = total = 0
        for size in sizes[: max(0, free_events)]:
            if total + size > free_bytes:
                break
            n += 1
            total += size
        if n == 0 and sizes and self._inflight_events == 0 and free_events > 0:
            # One event larger than the whole byte slack: alone and while not paused, or
            # never.
            if not self.is_paused:
                return 1, sizes[0]
        return n, total

    def try_admit(self, size: int) -> bool:
        """Admit one event of ``size`` bytes if it fits now, without waiting (the fast
        path of :meth:`admit` for a single append: no coroutine, no list); ``False``
        when it does not fit, and then nothing was admitted. :meth:`release` it as an
        admission of one."""
        if (
            self._holds
            or self._events + self._inflight_events >= self.hard_events
            or self._bytes + self._inflight_bytes + size > self.hard_bytes
        ):
            return False
        self._inflight_events += 1
        self._inflight_bytes += size
        return True

    async def admit(self, sizes: Sequence[int], *, wait: bool = True) -> tuple[int, int]:
        """Admit the first events of ``sizes`` (their JSON sizes): returns how many
        (at least one) and their bytes, which the caller must :meth:`release` once they
        are committed (or failed). Waits while none fit; raises :class:`IntakePaused`
        instead when ``wait`` is false."""
        n, total = self._room(sizes)
        while n == 0 and sizes:
            if not wait:
                raise IntakePaused(
                    f"intake paused ({self.reason or 'backlog at its bound'}); retry later"
                )
            if self._closed:
                return 0, 0
            self._waiters += 1
            try:
                await self._space.wait()
            finally:
                self._waiters -= 1
            n, total = self._room(sizes)
        self._inflight_events += n
        self._inflight_bytes += total
        return n, total

    def release(self, n: int, size: int) -> None:
        """``n`` admitted events (``size`` bytes) are committed, duplicates or failed."""
        self._inflight_events -= n
        self._inflight_bytes -= size
        self._wake()

    def _wake(self) -> None:
        if self._waiters:
            event, self._space = self._space, anyio.Event()
            event.set()
