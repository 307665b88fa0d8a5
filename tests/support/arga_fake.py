"""Test helpers for the Arga sources: the simulator on a free loopback port, a clock
that records sleeps instead of sleeping, and an ArgaSource running against it."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from argbridge.config.arga import ArgaSourceConfig
from argbridge.journal import Journal
from argbridge.logging import configure_logging
from argbridge.metrics import Metrics
from argbridge.simulator.arga import ArgaSimulator
from argbridge.sources.arga import ArgaSource
from argbridge.sources.base import SourceContext
from tests.conftest import settings


@dataclass
class RecordingClock:
    """Real time, but ``sleep`` only records the delay and yields (no waiting)."""

    sleeps: list[float] = field(default_factory=list)
    now: float = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def simulator(**kw: Any) -> AsyncIterator[ArgaSimulator]:
    sim = ArgaSimulator("test-token-123456", **kw)
    async with sim.running():
        yield sim


@dataclass
class Harness:
    source: ArgaSource
    ctx: SourceContext
    journal: Journal
    clock: RecordingClock
    metrics: Metrics

    async def events(self) -> list[Any]:
        records = await self.journal.read_after(0, 100_000)
        return [r.event for r in records]

    async def types(self) -> list[str]:
        return [e.type for e in await self.events()]

    async def wait_run(self, kind: str, run_id: str) -> str:
        await self.source.started.wait()
        state = self.source.runs[(kind, run_id)]
        await state.finished.wait()
        return state.status

    async def discover_once(self) -> int:
        """One poll of the run listings (what the poll loop does each interval)."""
        assert self.source.discovery is not None
        return await self.source.discovery.once()

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def arga_config(sim: ArgaSimulator, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "type": "arga",
        "base_url": sim.base_url,
        "api_key": sim.token,
        "poll_interval": 0,
        "reconnect": {"initial": 0.5, "max": 4},
    }
    cfg.update(overrides)
    return cfg


@asynccontextmanager
async def running_source(
    tmp_path: Path,
    sim: ArgaSimulator,
    *,
    journal: Journal | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    s = settings(tmp_path, sources={"arga": arga_config(sim, **overrides)})
    cfg = s.sources["arga"]
    assert isinstance(cfg, ArgaSourceConfig)
    own = journal is None
    j = journal or Journal(tmp_path / "journal.db", sinks=["s"])
    if own:
        await j.__aenter__()
    clock = RecordingClock()
    metrics = Metrics()
    ctx = SourceContext("arga", j.for_source(), metrics, clock)
    source = ArgaSource("arga", cfg, s)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, ctx)
            with anyio.fail_after(10):
                await source.started.wait()
            yield Harness(source, ctx, j, clock, metrics)
            tg.cancel_scope.cancel()
    finally:
        if own:
            await j.__aexit__(None, None, None)


async def eventually(predicate: Any, limit: float = 10.0) -> None:
    """Wait until ``await predicate()`` is true, checking after each scheduler pass (a
    condition with no event to wait on, e.g. a journal state value); bounded."""
    with anyio.fail_after(limit):
        while not await predicate():  # noqa: ASYNC110 - no event exists for a state value
            await anyio.sleep(0.002)


@contextmanager
def captured_logs(level: str = "debug") -> Iterator[io.StringIO]:
    """Route argbridge's (JSON) logs into a buffer; restore the defaults afterwards."""
    buf = io.StringIO()
    configure_logging(level, "json", stream=buf)
    try:
        yield buf
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
