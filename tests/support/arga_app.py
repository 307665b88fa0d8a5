"""Run a whole App against the Arga simulator (control API on its socket and, with a
token, on a free loopback TCP port too)."""

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
from tests.support.ops import listening


@asynccontextmanager
async def running_app(
    tmp_path: Path, sim: ArgaSimulator | None, *, token: str | None = None, **source: Any
) -> AsyncIterator[App]:
    http: dict[str, Any] = {"enabled": True, "port": free_port()}
    control: dict[str, Any] = {"port": 0, "token": token} if token else {}
    src = arga_config(sim, **source) if sim is not None else {"type": "arga", **source}
    s = settings(
        tmp_path,
        http=http,
        control=control,
        sources={"arga": src},
        sinks={"file": {"type": "file", "path": "events.jsonl"}},
        routes=[{"sinks": ["file"]}],
    )
    app = App(s, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
            await listening(app)
        yield app
        app.request_shutdown()
