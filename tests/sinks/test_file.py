"""The file sink: JSON lines, fsync before ack, rotation by size."""

from __future__ import annotations

from pathlib import Path

import orjson

from argbridge.config.settings import load_settings
from argbridge.config.sinks import FileSinkConfig
from argbridge.events import CloudEvent
from argbridge.journal import Journal, JournalRecord
from argbridge.metrics import Metrics
from argbridge.router import Route
from argbridge.sinks.base import Delivery, SinkContext
from argbridge.sinks.file import FileSink
from tests.conftest import make_event

ROUTE = Route("r", ("f",), ())


def deliveries(events: list[CloudEvent]) -> list[Delivery]:
    return [Delivery(JournalRecord(n + 1, e, 1, 0.0), ROUTE) for n, e in enumerate(events)]


async def make_sink(tmp_path: Path, **cfg) -> tuple[FileSink, Journal]:
    settings = load_settings(None, state_dir=str(tmp_path))
    config = FileSinkConfig(type="file", **cfg)
    journal = Journal(tmp_path / "j.db", sinks=["f"])
    return FileSink(config, SinkContext("f", journal, Metrics()), settings), journal


async def test_writes_one_cloudevent_per_line_relative_to_state_dir(tmp_path: Path):
    sink, _ = await make_sink(tmp_path, path=Path("out/events.jsonl"))
    await sink.start()
    events = [make_event(n) for n in range(3)]
    await sink.deliver(deliveries(events))
    await sink.aclose()
    assert read_events(tmp_path / "out" / "events.jsonl") == events


def read_events(path: Path) -> list[CloudEvent]:
    return [CloudEvent.from_dict(orjson.loads(x)) for x in path.read_bytes().splitlines()]


async def test_rotates_by_size_and_keeps_n_files(tmp_path: Path):
    sink, _ = await make_sink(tmp_path, path=tmp_path / "e.jsonl", rotate_bytes=600, keep=2)
    await sink.start()
    assert sink.health().ready
    for n in range(8):
        await sink.deliver(deliveries([make_event(n, size=200)]))
    await sink.aclose()
    check_rotation(tmp_path)


def check_rotation(tmp_path: Path) -> None:
    names = sorted(p.name for p in tmp_path.glob("e.jsonl*"))
    assert names == ["e.jsonl", "e.jsonl.1", "e.jsonl.2"]
    total = sum(len(p.read_bytes().splitlines()) for p in tmp_path.glob("e.jsonl*"))
    assert 3 <= total < 8  # older files beyond keep=2 were dropped
    newest = orjson.loads((tmp_path / "e.jsonl").read_bytes().splitlines()[-1])
    assert newest["data"]["n"] == 7
