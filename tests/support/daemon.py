"""Run a whole :class:`argbridge.runtime.App` in-process for control-API/CLI tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio

from argbridge.config.settings import Settings
from argbridge.runtime import App


@contextlib.asynccontextmanager
async def running_app(s: Settings, **kw: Any) -> AsyncIterator[tuple[App, str]]:
    app = App(s, handle_signals=False, **kw)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
            assert app.http is not None
            await app.http.started.wait()
        try:
            yield app, f"http://127.0.0.1:{app.http.port}"
        finally:
            app.request_shutdown()
            with anyio.fail_after(15):
                await app.stopped.wait()
