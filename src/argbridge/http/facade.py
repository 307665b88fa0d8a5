"""What the HTTP planes may see of the daemon: :class:`ControlFacade`.

The control API, ``/readyz`` and ``/metrics`` receive this narrow role instead of the
runtime's whole ``App`` (which satisfies it structurally), so :mod:`argbridge.http` never
imports :mod:`argbridge.runtime`: the runtime builds the listeners, not the other way
round. Everything here is read-only from the HTTP side except what the control API is
for (following runs, replaying dead letters), which goes through the components' own
methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import anyio

    from argbridge.clock import Clock
    from argbridge.config.settings import Settings
    from argbridge.journal import Journal
    from argbridge.metrics import Metrics
    from argbridge.router import Router as EventRouter
    from argbridge.sinks.base import Health, Sink, WorkerRole
    from argbridge.sources.base import Source


class HealthView(Protocol):
    """Readiness per component: all ``/readyz`` needs."""

    def health(self) -> dict[str, Health]: ...


class ControlFacade(HealthView, Protocol):
    """The daemon as the control API and ``/metrics`` see it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def stopping(self) -> anyio.Event:
        """Set once the daemon begins its graceful stop (streams end)."""
        ...

    @property
    def journal(self) -> Journal:
        """The open journal; raises ``RuntimeError`` before it is open."""
        ...

    @property
    def sinks(self) -> Mapping[str, Sink]: ...

    @property
    def workers(self) -> Mapping[str, WorkerRole]: ...

    @property
    def internal_workers(self) -> Mapping[str, WorkerRole]:
        """Sink workers the daemon runs for itself, by name, whose readiness is
        ``health()[name]`` (cluster mode's events producer, ``cluster:events``, a Kafka
        sink); empty outside cluster mode."""
        ...

    @property
    def sources(self) -> Mapping[str, Source]: ...

    @property
    def router(self) -> EventRouter:
        """The routes now in force (a reload replaces them)."""
        ...

    def config_status(self) -> dict[str, Any]:
        """The loaded config's hash, load time and the last reload's outcome."""
        ...

    async def cluster_status(self) -> dict[str, Any] | None:
        """Cluster mode: members, who owns which runs, rebalances (``None``: off)."""
        ...


def open_journal(daemon: ControlFacade) -> Journal | None:
    """The journal when it is open (``None`` before start-up or after shutdown)."""
    try:
        journal = daemon.journal
    except RuntimeError:
        return None
    return None if journal.closed else journal
