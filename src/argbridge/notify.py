"""systemd integration: the ``sd_notify`` protocol over ``$NOTIFY_SOCKET`` (standard library).

Owns:

- :class:`Notifier`: sends one datagram of ``KEY=VALUE`` lines to the socket systemd
  passes in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the Linux abstract namespace);
  a no-op when the variable is unset; never raises (a lost datagram is logged).
- :func:`watchdog_interval`: half of ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or
  names this process (``sd_watchdog_enabled(3)``), else ``None``.
- :class:`SystemdService`: the daemon service (``app.add_service("systemd", …)``) that
  drives the protocol for one :class:`~argbridge.runtime.App`.

Readiness (``READY=1``) is sent once the journal is open and every sink worker has been
*attempted*: each sink either started, or failed its first start (its error is in
``worker.last_error``), or ``ready_grace`` seconds passed. A sink whose destination is
down must not keep the unit in ``activating`` until ``TimeoutStartSec`` kills it: the
journal keeps accepting and the sink catches up once it connects. ``STATUS=`` then names
every sink that is still starting, and ``/readyz`` keeps answering 503 for it.

Watchdog: ``WATCHDOG=1`` every ``WATCHDOG_USEC/2`` only while the event loop runs *and*
the journal makes progress: each tick writes a heartbeat into the journal's state table
(through the group-commit writer) and reads it back (through the reader connection),
bounded by 90% of the interval. A stalled loop sends nothing because this task does not
run; a stalled journal (disk hung, writer thread stuck) withholds the ping, says so in
``STATUS=`` and lets systemd restart the unit after ``WatchdogSec``.

Shutdown: ``STOPPING=1`` as soon as the runtime begins its graceful stop (the service is
cancelled when intake stops), so systemd applies ``TimeoutStopSec`` to the drain.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.logging import get_logger, redact_text

if TYPE_CHECKING:
    from argbridge.runtime import App

#: Key of the watchdog heartbeat in the journal's durable state table.
HEARTBEAT_KEY = "systemd:watchdog-heartbeat"


def socket_address(value: str | None) -> str | bytes | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value (``None``: not usable).

    ``/path`` is a filesystem socket; ``@name`` is the abstract namespace (leading NUL).
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock:… and relative paths are not supported


def format_message(fields: Mapping[str, str | int]) -> bytes:
    """One datagram: ``KEY=VALUE`` lines (newlines inside a value become spaces)."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``WATCHDOG_USEC``; ``None`` if disabled.

    Disabled when ``WATCHDOG_USEC`` is unset, not a positive integer, or when
    ``WATCHDOG_PID`` is set to another process's PID.
    """
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner:
        if not owner.isdigit() or int(owner) != (os.getpid() if pid is None else pid):
            return None
    return int(raw) / 2_000_000


class Notifier:
    """Sends ``sd_notify`` datagrams to one address; a no-op without one."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._log = get_logger(component="systemd", kind="service")
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET")
        address = socket_address(raw)
        notifier = cls(address)
        if raw and address is None:
            notifier._log.warning("systemd.notify_socket_unsupported", notify_socket=raw)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``fields`` as one datagram; ``False`` if disabled or the send failed."""
        if self.address is None or not fields:
            return False
        data = format_message(fields)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # systemd drains its socket promptly; never stall the event loop for long.
                self._sock.settimeout(0.5)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._warned:
                self._log.warning("systemd.notify_failed", error=exc, keys=sorted(fields))
                self._warned = True
            return False
        self._warned = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SystemdService:
    """Readiness, status, watchdog and stopping notifications for one daemon."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        watchdog: float | None = None,
        ready_grace: float = 15.0,
        status_interval: float = 5.0,
        poll_interval: float = 0.05,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.notifier = notifier
        self.watchdog = watchdog
        self.ready_grace = ready_grace
        self.status_interval = status_interval
        self.poll_interval = poll_interval
        self.clock = clock
        self.log = get_logger(component="systemd", kind="service")
        self.ready_sent = False
        self.stopping_sent = False
        self.watchdog_ok: bool | None = None
        self.pings = 0
        self._beat = 0
        self._last_status: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kw: Any) -> SystemdService | None:
        """The service when ``$NOTIFY_SOCKET`` is usable, else ``None``."""
        env = os.environ if env is None else env
        notifier = Notifier.from_env(env)
        if not notifier.enabled:
            return None
        return cls(notifier, watchdog=watchdog_interval(env), **kw)

    async def __call__(self, app: App) -> None:
        try:
            async with anyio.create_task_group() as tg:
                if self.watchdog is not None and self.watchdog > 0:
                    tg.start_soon(self._watchdog_loop, app, name="systemd-watchdog")
                await self._announce_ready(app)
                while True:
                    await self.clock.sleep(self.status_interval)
                    self._status(self.describe(app))
        finally:
            # Cancelled because the runtime is stopping (not because this task failed).
            if app.stopping.is_set() and not self.stopping_sent:
                self.stopping_sent = True
                self.notifier.notify(STOPPING=1, STATUS="stopping: draining in-flight deliveries")
            self.notifier.close()

    # -- readiness ---------------------------------------------------------------------

    async def _announce_ready(self, app: App) -> None:
        await app.ready.wait()
        deadline = self.clock.monotonic() + self.ready_grace
        while True:
            waiting = self.starting_sinks(app)
            if all(w.last_error for w in (app.workers[n] for n in waiting)):
                break  # every sink started or has been attempted at least once
            if self.clock.monotonic() >= deadline:
                break
            await self.clock.sleep(self.poll_interval)
        status = self.describe(app)
        self.ready_sent = True
        self._last_status = status
        self.notifier.notify(READY=1, STATUS=status)
        self.log.info("systemd.ready", status=status)

    @staticmethod
    def starting_sinks(app: App) -> list[str]:
        return [name for name, w in app.workers.items() if not w.started]

    def describe(self, app: App) -> str:
        """The ``STATUS=`` text: what runs, what is still starting, backlog, pause."""
        parts: list[str] = []
        waiting = self.starting_sinks(app)
        if waiting:
            details = []
            for name in waiting:
                err = app.workers[name].last_error
                details.append(f"{name} ({err})" if err else name)
            parts.append("sink still starting: " + ", ".join(details))
        else:
            parts.append(f"running: {len(app.sources)} source(s), {len(app.sinks)} sink(s)")
        try:
            stats = app.journal.stats()
        except RuntimeError:
            stats = None
        if stats is not None and stats.backlog_events:
            worst = max(stats.backlog_events, key=lambda s: stats.backlog_events[s])
            parts.append(f"backlog {stats.backlog_events[worst]} ({worst})")
        if stats is not None and stats.paused:
            reason = app.journal.pause.reason
            parts.append(
                "sources paused (disk full)"
                if reason == "disk_full"
                else "sources paused (backpressure)"
            )
        if self.watchdog_ok is False:
            parts.append("watchdog withheld: journal not responding")
        return redact_text("; ".join(parts))[:400]

    def _status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.notifier.notify(STATUS=status)

    # -- watchdog ----------------------------------------------------------------------

    async def probe(self, app: App) -> bool:
        """One journal round trip: write a heartbeat, read it back."""
        self._beat += 1
        token = f"{os.getpid()}:{self._beat}"
        await app.journal.set_state(HEARTBEAT_KEY, token)
        return await app.journal.get_state(HEARTBEAT_KEY) == token

    async def _watchdog_loop(self, app: App) -> None:
        assert self.watchdog is not None
        interval = self.watchdog
        while True:
            next_tick = self.clock.monotonic() + interval
            ok = False
            reason = "timed out"
            with anyio.move_on_after(interval * 0.9):
                try:
                    ok = await self.probe(app)
                    reason = "heartbeat mismatch"
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
            if ok:
                self.notifier.notify(WATCHDOG=1)
                self.pings += 1
                if self.watchdog_ok is False:
                    self.log.info("systemd.watchdog_resumed")
                    self.watchdog_ok = True
                    self._status(self.describe(app))
                self.watchdog_ok = True
            else:
                if self.watchdog_ok is not False:
                    self.log.error("systemd.watchdog_withheld", reason=reason)
                self.watchdog_ok = False
                if self.ready_sent:
                    self._status(self.describe(app))
            await self.clock.sleep(max(0.0, next_tick - self.clock.monotonic()))


def install(app: App, env: Mapping[str, str] | None = None) -> SystemdService | None:
    """Add the systemd service to ``app`` when running under systemd (``Type=notify``)."""
    service = SystemdService.from_env(env)
    if service is not None:
        app.add_service("systemd", service)
    return service
