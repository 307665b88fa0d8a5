"""The group linger (``journal.group_linger``): whether the leader of a group commit
waits for more appends before its one synced write.

At a few hundred appends a second each request would otherwise pay its own group: a
thread round trip and an ``fdatasync``. So under live traffic a leader whose queue holds
an append waits ``group_linger`` first, while groups are small (under ``LINGER_BELOW``:
a backlog fills them anyway) and appends keep arriving (the previous group with appends
began less than ``LINGER_WINDOW`` lingers ago). A lone append in a quiet journal, and a
group of acks only, commit at once. An append is still answered only after its sync.

Acks behind. A sink worker acks in the background (``Ack.behind``): it reads and
delivers its next batch meanwhile. Under that same live traffic a queue of such acks
only lingers too, so the next appends carry them instead of a group commit of their
own (bench_bounds --phase mixed: 0.15 group commits per event with the acks alone,
against 0.10). Those lingers do not count for or against the closed-loop rule below:
they wait for no append in particular.

Closed loops. A sender that waits for each answer before its next request cannot add to
the group its own request waits for. N such senders re-queue right after the last
commit answered them: in the same process before the leader starts to linger, over a
network within its first moments. Either way nothing comes later in the linger, which
only holds them to one group per linger: measured with 2 ms, two closed-loop senders
ran at 774 appends/s where one without the linger ran at ~2,900/s. So a linger is
*useful* only when an append arrives after the first ``EARLY_SHARE`` of it; once
``FRUITLESS_LINGERS`` lingers in a row were not, the leader stops lingering, except for
a probe at most once per ``PROBE_INTERVAL``; a useful probe ends the pause.

The clock is injected; the writer reports each append queued while a linger runs
(:meth:`GroupLinger.arrived`) and the size of each group with appends
(:meth:`GroupLinger.committed`).
"""

from __future__ import annotations

from collections.abc import Collection

from argbridge.clock import Clock
from argbridge.journal.ops import Ack, Append

#: A leader lingers only while groups are this small (the queue and the previous group
#: with appends). Sixteen: a 20 ms linger at 400 appends/s gathers ~8, and with eight as
#: the bound every other group skipped its linger (0.20 group commits per event against
#: 0.11, bench_bounds --phase cpu) ...
LINGER_BELOW = 16
#: ... and the previous group with appends began less than this many lingers ago (live
#: traffic of more than ~1 / (4 x linger) appends a second: 12.5/s for 20 ms) ...
LINGER_WINDOW = 4
#: ... and unless this many lingers in a row were not useful (closed loops). Eight: open
#: traffic of 100/s in a 20 ms linger has no append after its first 5 ms ~22 % of the
#: time, eight times in a row about once in 200,000 lingers (Poisson) ...
FRUITLESS_LINGERS = 8
#: ... where a linger is useful when an append arrives after this share of it ...
EARLY_SHARE = 0.25
#: ... and then a group lingers anyway at most this often (seconds), to look again.
PROBE_INTERVAL = 1.0


class GroupLinger:
    """The linger policy of one writer (see the module docstring)."""

    def __init__(self, linger: float, clock: Clock) -> None:
        self.linger = linger
        self.clock = clock
        self._last_group = 0
        self._last_group_at = float("-inf")
        self._fruitless = 0
        self._last_probe_at = float("-inf")
        #: Whether a linger runs (the writer then reports the appends queued).
        self.waiting = False
        self._arrivals = 0
        self._last_arrival = float("-inf")
        #: The linger wanted last is for acks behind only (not counted: see the docstring).
        self._acks_only = False

    @property
    def paused(self) -> bool:
        """Whether the last lingers gathered nothing (a closed loop): no lingering but
        the probes."""
        return self._fruitless >= FRUITLESS_LINGERS

    @property
    def enabled(self) -> bool:
        return self.linger > 0

    def wanted(self, queued: Collection[object]) -> bool:
        """Whether a leader with the ops ``queued`` lingers (only a short queue holding
        an append, or only acks behind, can)."""
        if not self.enabled or len(queued) >= LINGER_BELOW:
            return False
        now = self.clock.monotonic()
        recent = now - self._last_group_at < LINGER_WINDOW * self.linger
        self._acks_only = not any(type(op) is Append for op in queued)
        if self._acks_only:
            return (
                recent
                and not self.paused
                and all(isinstance(op, Ack) and op.behind for op in queued)
            )
        small = self._last_group < LINGER_BELOW
        self._last_group_at = now
        if not (recent and small):
            return False
        if self.paused:
            if now - self._last_probe_at < PROBE_INTERVAL:
                return False
            self._last_probe_at = now  # a probe: a useful one ends the pause
        return True

    def arrived(self) -> None:
        """An append was queued while this linger runs."""
        self._arrivals += 1
        self._last_arrival = self.clock.monotonic()

    async def wait(self) -> None:
        """Linger; then whether it was useful (an append after its first share)."""
        start, arrivals = self.clock.monotonic(), self._arrivals
        self.waiting = True
        try:
            await self.clock.sleep(self.linger)
        finally:
            self.waiting = False
        if self._acks_only:
            return
        late = self._last_arrival - start > EARLY_SHARE * self.linger
        if self._arrivals > arrivals and late:
            self._fruitless = 0
            return
        self._fruitless += 1
        if self._fruitless == FRUITLESS_LINGERS:
            self._last_probe_at = self.clock.monotonic()  # paused: the first probe later

    def committed(self, size: int) -> None:
        """A group of ``size`` ops holding appends was taken for commit."""
        self._last_group = size
