"""Shared fixtures: a journal in a temp dir, settings factories, free ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from argbridge.config.settings import Settings, load_settings
from argbridge.events import CloudEvent, deterministic_id
from argbridge.journal import Journal

pytest_plugins = ["tests.support.kafka_fixtures"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never a fixed one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_event(
    n: int = 0, *, size: int = 0, type_: str = "arga.validation.step_result", **kw: Any
) -> CloudEvent:
    """A valid event; ``size`` pads ``data`` to roughly that many bytes."""
    data: dict[str, Any] = {"n": n}
    if size:
        data["pad"] = "x" * size
    return CloudEvent(
        id=kw.pop("id", deterministic_id("test", n)),
        source=kw.pop("source", "urn:test"),
        type=type_,
        subject=kw.pop("subject", f"run-{n % 3}"),
        data=data,
        **kw,
    )


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with state in ``tmp_path`` and no HTTP listener unless asked."""
    base: dict[str, Any] = {"state_dir": str(tmp_path / "state"), "http": {"enabled": False}}
    base.update(overrides)
    return load_settings(None, **base)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with Journal(tmp_path / "journal.db", sinks=["a", "b"]) as j:
        yield j
