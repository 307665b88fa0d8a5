"""Run one configured source (generic, or a profile) against a journal, as the runtime
would: built by the registry, with its own context, metrics and an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from argbridge.clock import Clock
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.registry import build_source
from argbridge.sources.base import Source, SourceContext
from tests.conftest import settings
from tests.support.manual_clock import ManualClock


@dataclass
class Running:
    source: Any
    ctx: SourceContext
    journal: Journal
    metrics: Metrics
    clock: Any
    done: anyio.Event

    async def events(self) -> list[Any]:
        return [r.event for r in await self.journal.read_after(0, 100_000)]

    async def types(self) -> list[str]:
        return [e.type for e in await self.events()]

    async def wait_events(self, n: int, limit: float = 10.0) -> list[Any]:
        """Until the journal holds at least ``n`` events (waits on the journal)."""
        with anyio.fail_after(limit):
            while True:
                seq = self.journal.last_seq
                events = await self.events()
                if len(events) >= n:
                    return events
                await self.journal.wait_for_events(seq)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def rejected(self, reason: str) -> float:
        return self.metric(
            "argbridge_component_discarded_events_total",
            component="src",
            kind="source",
            reason=reason,
        )


@asynccontextmanager
async def running(
    tmp_path: Path,
    config: dict[str, Any],
    *,
    clock: Clock | None = None,
    journal: Journal | None = None,
    name: str = "src",
) -> AsyncIterator[Running]:
    """Start source ``name`` from ``config``; stop it when the block ends."""
    s = settings(tmp_path, sources={name: config})
    own = journal is None
    j = journal or Journal(tmp_path / "journal.db", sinks=["s"])
    if own:
        await j.__aenter__()
    clk: Any = clock or ManualClock()
    metrics = Metrics()
    ctx = SourceContext(name, j.for_source(), metrics, clk)
    source: Source = build_source(name, s.sources[name], s)
    done = anyio.Event()

    async def run() -> None:
        try:
            await source.run(ctx)
        finally:
            done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            yield Running(source, ctx, j, metrics, clk, done)
            tg.cancel_scope.cancel()
    finally:
        if own:
            await j.__aexit__(None, None, None)
