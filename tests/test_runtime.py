"""The daemon in-process: the full pipeline, crash restarts, graceful drain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from argbridge import registry
from argbridge.runtime import App
from argbridge.sinks.base import Delivery, Health, SinkContext
from argbridge.sources.base import SourceContext
from argbridge.sources.replay import load_sample
from tests.conftest import make_event, settings


def file_events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


async def test_sample_flows_from_replay_source_to_file_sink(tmp_path: Path):
    s = settings(
        tmp_path,
        sources={"sample": {"type": "replay", "interval": 0}},
        sinks={"file": {"type": "file", "path": "events.jsonl"}},
    )
    app = App(s, handle_signals=False)
    expected = len(load_sample(None))
    out = tmp_path / "state" / "events.jsonl"
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        await app.ready.wait()
        with anyio.fail_after(20):
            while app.journal.cursor("file") < expected:
                await app.journal.wait_for_events(app.journal.cursor("file"))
                await anyio.sleep(0.01)
        app.request_shutdown()
    events = file_events(out)
    types = [e["type"] for e in events]
    assert len(events) == expected
    assert "arga.validation.run.failed" in types
    assert "arga.demorun.done" in types
    assert "argus.incident.created" in types
    assert all("upstream" in e["data"] for e in events)
    health = app.health()
    assert set(health) == {"journal", "sink:file", "source:sample"}


class CrashingSource:
    crashes_left = 2
    runs = 0

    def __init__(self, name: str, config: Any, settings: Any) -> None:
        self.name = name

    async def run(self, ctx: SourceContext) -> None:
        type(self).runs += 1
        if type(self).crashes_left:
            type(self).crashes_left -= 1
            raise RuntimeError("upstream parser bug")
        await ctx.emit(make_event(1))
        await anyio.sleep_forever()

    def health(self) -> Health:
        return Health()


async def test_a_crashed_component_is_restarted_not_fatal(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(registry.SOURCES, "replay", "tests.test_runtime:CrashingSource")
    s = settings(
        tmp_path,
        sources={"flaky": {"type": "replay"}},
        sinks={"file": {"type": "file"}},
        runtime={"restart_initial": 0.001, "restart_max": 0.002},
    )
    app = App(s, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        await app.ready.wait()
        with anyio.fail_after(10):
            while app.journal.last_seq < 1:
                await app.journal.wait_for_events(0)
        app.request_shutdown()
    assert CrashingSource.runs == 3
    assert (
        app.metrics.registry.get_sample_value(
            "argbridge_component_restarts_total", {"component": "source:flaky", "kind": "source"}
        )
        == 2
    )


class GatedSink:
    gate: anyio.Event
    entered: anyio.Event

    def __init__(self, config: Any, ctx: SinkContext, settings: Any) -> None:
        self.name = ctx.name
        self.delivered: list[str] = []

    async def start(self) -> None:
        pass

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        type(self).entered.set()
        await type(self).gate.wait()
        self.delivered.extend(d.event.id for d in batch)

    async def aclose(self) -> None:
        pass

    def health(self) -> Health:
        return Health()


@pytest.mark.parametrize("release", [True, False])
async def test_shutdown_drains_the_in_flight_batch_within_the_deadline(
    tmp_path: Path, monkeypatch, release: bool
):
    monkeypatch.setitem(registry.SINKS, "file", "tests.test_runtime:GatedSink")
    GatedSink.gate = anyio.Event()
    GatedSink.entered = anyio.Event()
    s = settings(
        tmp_path,
        sinks={"slow": {"type": "file", "batch_size": 10}},
        runtime={"drain_timeout": 5 if release else 0.05},
    )
    app = App(s, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        await app.ready.wait()
        await app.journal.append_many([make_event(n) for n in range(3)])
        with anyio.fail_after(5):
            await GatedSink.entered.wait()
        app.request_shutdown()
        if release:
            await anyio.wait_all_tasks_blocked()
            GatedSink.gate.set()
        with anyio.fail_after(10):
            await app.stopped.wait()
    sink = app.sinks["slow"]
    assert isinstance(sink, GatedSink)
    if release:
        assert len(sink.delivered) == 3  # drained: delivered and acknowledged
    else:
        assert sink.delivered == []  # deadline passed: nothing acknowledged, redelivered later
    from argbridge.journal import Journal

    async with Journal(tmp_path / "state" / "journal", sinks=["slow"]) as j:
        assert j.cursor("slow") == (3 if release else 0)


async def test_startup_heap_is_frozen_once_after_the_build(tmp_path: Path):
    import gc

    from argbridge.runtime import freeze_startup_heap

    before = gc.get_threshold()
    app = App(settings(tmp_path, runtime={"gc_thresholds": [4000, 15, 90]}), handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        await app.ready.wait()
        assert gc.isenabled()
        assert gc.get_threshold() == (4000, 15, 90)  # runtime.gc_thresholds
        gc.set_threshold(*before)  # the rest of the test run keeps its own
        frozen = gc.get_freeze_count()
        assert frozen > 0  # the daemon's start-up objects are out of the collector's sight
        freeze_startup_heap()  # once per process: a later daemon does not freeze again
        assert gc.get_freeze_count() == frozen
        app.request_shutdown()


def test_malloc_thresholds_are_set_together_with_glibc_only_and_env_wins(monkeypatch):
    import platform

    from argbridge.runtime import tune_malloc

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt tuning is glibc-only")
    mib = 1024 * 1024
    assert tune_malloc(32 * mib, 8 * mib) == [
        f"mmap_threshold={8 * mib}",
        f"trim_threshold={32 * mib}",
    ]
    assert tune_malloc(0, 8 * mib) == []  # 0 in either: glibc's adaptive thresholds stay
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert tune_malloc(32 * mib, 8 * mib) == []  # the operator's environment wins
