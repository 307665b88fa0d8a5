"""Run a whole App (HTTP control API on a free port) against the Arga simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from argbridge.runtime import App
from argbridge.simulator.arga import ArgaSimulator
from tests.conftest import free_port, settings
from tests.support.arga_fake import arga_config


@asynccontextmanager
async def running_app(
    tmp_path: Path, sim: ArgaSimulator | None, *, token: str | None = None, **source: Any
) -> AsyncIterator[App]:
    http: dict[str, Any] = {"enabled": True, "port": free_port()}
    if token:
        http["control_token"] = token
    src = arga_config(sim, **source) if sim is not None else {"type": "arga", **source}
    s = settings(
        tmp_path,
        http=http,
        sources={"arga": src},
        sinks={"file": {"type": "file", "path": "events.jsonl"}},
        routes=[{"sinks": ["file"]}],
    )
    app = App(s, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
            assert app.http is not None
            await app.http.started.wait()
        yield app
        app.request_shutdown()
