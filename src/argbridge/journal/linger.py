"""The group linger (``journal.group_linger``): whether the leader of a group commit
waits for more appends before its one synced write.

At a few hundred appends a second each request would otherwise pay its own group: a
thread round trip and an ``fdatasync``. So under live traffic a leader whose queue holds
an append waits ``group_linger`` first, while groups are small (under ``LINGER_BELOW``:
a backlog fills them anyway) and appends keep arriving (the previous group with appends
began less than ``LINGER_WINDOW`` lingers ago). A lone append in a quiet journal, and a
group of acks only, commit at once. An append is still answered only after its sync.

Closed loops. A sender that waits for each answer before its next request cannot add to
the group its own request waits for, and N such senders have all queued theirs before
the leader starts to linger (it lets the appenders the last commit woke queue first).
Their lingers gather nothing, and each holds them to one group per linger: measured with
2 ms, 1,000 sequential appends ran at ~400/s and two closed-loop senders at 774/s, where
one sender without the linger ran at ~2,900/s. So once ``FRUITLESS_LINGERS`` lingers in
a row gathered no append, the leader no longer lingers until a group starts with more
appends than the last one held (a sender that was not waiting on the last commit: open
traffic, or one more sender), or, at most once per ``PROBE_INTERVAL``, to look again.

The clock is injected; :meth:`GroupLinger.wait` reads the writer's count of appends
queued before and after the linger, and :meth:`GroupLinger.committed` takes the size of
each group with appends.
"""

from __future__ import annotations

from collections.abc import Callable

from argbridge.clock import Clock

#: A leader lingers only while groups are this small (the queue and the previous group
#: with appends). Sixteen: a 20 ms linger at 400 appends/s gathers ~8, and with eight as
#: the bound every other group skipped its linger (0.20 group commits per event against
#: 0.11, bench_bounds --phase cpu) ...
LINGER_BELOW = 16
#: ... and the previous group with appends began less than this many lingers ago (live
#: traffic of more than ~1 / (4 x linger) appends a second: 12.5/s for 20 ms) ...
LINGER_WINDOW = 4
#: ... and unless this many lingers in a row gathered no append (closed loops). Eight:
#: open traffic of 400/s gathers nothing in a 2 ms linger eight times in a row once in
#: ~600 lingers, of 100/s in a 10 ms one once in ~3,000 (Poisson) ...
FRUITLESS_LINGERS = 8
#: ... and then a group lingers anyway at most this often (seconds), to look again.
PROBE_INTERVAL = 1.0


class GroupLinger:
    """The linger policy of one writer (see the module docstring)."""

    def __init__(self, linger: float, clock: Clock) -> None:
        self.linger = linger
        self.clock = clock
        self._last_group = 0
        self._last_group_at = float("-inf")
        self._last_appends = 0
        self._fruitless = 0
        self._last_probe_at = float("-inf")

    @property
    def paused(self) -> bool:
        """Whether the last lingers gathered nothing (a closed loop): no lingering but
        the probes."""
        return self._fruitless >= FRUITLESS_LINGERS

    def wanted(self, appends: int, queued: int) -> bool:
        """Whether a leader with ``queued`` ops, ``appends`` of them appends, lingers."""
        if self.linger <= 0 or queued >= LINGER_BELOW or not appends:
            return False
        now = self.clock.monotonic()
        recent = now - self._last_group_at < LINGER_WINDOW * self.linger
        small = self._last_group < LINGER_BELOW
        self._last_group_at = now
        if not (recent and small):
            return False
        if self.paused:
            if appends > self._last_appends:
                self._fruitless = 0  # someone not waiting on the last commit: look again
            elif now - self._last_probe_at >= PROBE_INTERVAL:
                self._last_probe_at = now
            else:
                return False
        return True

    async def wait(self, appends_enqueued: Callable[[], int]) -> None:
        """Linger; ``appends_enqueued()`` (the writer's running count of appends queued)
        tells whether it gathered any."""
        before = appends_enqueued()
        await self.clock.sleep(self.linger)
        if appends_enqueued() > before:
            self._fruitless = 0
            return
        self._fruitless += 1
        if self._fruitless == FRUITLESS_LINGERS:
            self._last_probe_at = self.clock.monotonic()  # paused: the first probe later

    def committed(self, size: int, appends: int) -> None:
        """A group of ``size`` ops, ``appends`` of them appends, was taken for commit."""
        self._last_group, self._last_appends = size, appends
