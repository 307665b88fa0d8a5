"""Pull sources in cluster mode: one owner each, cluster-wide.

Owns :func:`adopt`, which the runtime applies to every source it builds when
``cluster.enabled``:

- an Arga source (a :class:`ClusterFollower`: it asks for runs and follows the runs it
  is handed) is attached to the control-topic member and registered as the owner of
  its runs' records;
- a generic ``sse``/``websocket``/``poll`` source is wrapped in :class:`OwnedPullSource`:
  it is one record (``run/<name>/<type>/<name>``), asked for by every instance that has
  it in its config, and only the owner of that record runs it; its state values
  (``Last-Event-ID``, the WebSocket session count, "done") live in the record's position
  (a JSON object, recorded once the events before it are acked), so a new owner resumes
  where the last one confirmed;
- anything else (webhooks, replay) runs on every instance as before.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc
import orjson

from argbridge.cluster.lease import RunLease
from argbridge.cluster.records import RunId
from argbridge.cluster.roles import ControlPublisher, RunOwner
from argbridge.events import CloudEvent
from argbridge.journal import AppendStatus
from argbridge.journal.roles import SourceJournal
from argbridge.sinks.base import Health
from argbridge.sources.base import Source, SourceContext
from argbridge.sources.generic import GenericSource

PULL_TYPES = frozenset({"sse", "websocket", "poll"})


@runtime_checkable
class ClusterFollower(Protocol):
    """A source that follows what the cluster hands it (the Arga source)."""

    name: str
    started: anyio.Event

    def attach_cluster(self, publisher: ControlPublisher) -> None: ...

    async def own(self, lease: RunLease) -> None: ...

    async def disown(self, key: str) -> None: ...


class Registry(ControlPublisher, Protocol):
    """The member as :func:`adopt` uses it."""

    def register(self, owner: RunOwner) -> None: ...


def adopt(source: Source, source_type: str, member: Registry) -> Source:
    """``source`` as it runs in cluster mode (see the module docstring)."""
    if isinstance(source, ClusterFollower):
        source.attach_cluster(member)
        member.register(source)
        return source
    if source_type in PULL_TYPES:
        owned = OwnedPullSource(source, source_type, member)
        member.register(owned)
        return owned
    return source


class _LeasedState:
    """A source's journal role whose state values live in a run lease (one JSON object
    as the record's position); everything else goes to the journal."""

    def __init__(self, journal: SourceJournal, lease: RunLease) -> None:
        self._journal = journal
        self._lease = lease
        raw = lease.record.position
        try:
            doc = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            doc = {}
        self._values: dict[str, str] = (
            {k: v for k, v in doc.items() if isinstance(v, str)} if isinstance(doc, dict) else {}
        )

    @property
    def pause(self) -> Any:
        return self._journal.pause

    async def append(self, event: CloudEvent, *, wait: bool = True) -> AppendStatus:
        return await self._journal.append(event, wait=wait)

    async def append_many(self, events: Any) -> list[AppendStatus]:
        return await self._journal.append_many(events)

    async def append_encoded(
        self, items: Any, *, wait: bool = True, state: tuple[str, str] | None = None
    ) -> list[AppendStatus]:
        # The state lives in the lease, not in the journal: written once they are in.
        statuses = await self._journal.append_encoded(items, wait=wait)
        if state is not None:
            await self.set_state(*state)
        return statuses

    async def get_state(self, key: str) -> str | None:
        return self._values.get(key)

    async def set_state(self, key: str, value: str) -> None:
        self._values[key] = value
        await self._lease.set_state(
            key, orjson.dumps(self._values, option=orjson.OPT_SORT_KEYS).decode()
        )

    async def delete_state(self, key: str) -> None:
        if self._values.pop(key, None) is not None:
            await self._lease.set_state(
                key, orjson.dumps(self._values, option=orjson.OPT_SORT_KEYS).decode()
            )


class OwnedPullSource:
    """A generic pull source run only by the owner of its record."""

    def __init__(self, inner: Source, source_type: str, publisher: ControlPublisher) -> None:
        self.inner = inner
        self.name = inner.name
        self.run_id = RunId(inner.name, source_type, inner.name)
        self.publisher = publisher
        self.started = anyio.Event()
        self.owned = False
        self._ctx: SourceContext | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()

    async def run(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                self.started.set()
                await self.publisher.request(self.run_id, "config")
                await anyio.sleep_forever()
            finally:
                self._tg = None
                # A restart by the supervisor gets its record again once it runs.
                self.started = anyio.Event()
                self.publisher.source_stopped(self.name)

    async def own(self, lease: RunLease) -> None:
        if self._tg is None or self._ctx is None:
            raise RuntimeError(f"source {self.name} is not running")
        ctx = self._ctx
        leased = SourceContext(
            ctx.name,
            _LeasedState(ctx.journal, lease),  # type: ignore[arg-type]
            ctx.metrics,
            ctx.clock,
            type_prefix=ctx.type_prefix,
            log=ctx.log,
        )
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self.owned = True
        self._tg.start_soon(self._run_owned, leased, lease, self._scope, self._done)

    async def _run_owned(
        self, ctx: SourceContext, lease: RunLease, scope: anyio.CancelScope, done: anyio.Event
    ) -> None:
        try:
            with scope:
                await self.inner.run(ctx)
                status = self.inner.status if isinstance(self.inner, GenericSource) else "done"
                await lease.finish("done" if status in ("done", "following") else status)
        finally:
            self.owned = False
            done.set()

    async def disown(self, key: str) -> None:
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()

    def health(self) -> Health:
        if not self.owned:
            return Health(True, "standby (another instance owns it)")
        return self.inner.health()
