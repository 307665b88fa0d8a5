"""Run a whole :class:`argbridge.runtime.App` in-process for control-API/CLI tests.

Yields the app and the base URL of its TCP control listener (``control.port`` on
loopback: the settings must set it, e.g. to 0 for a free port)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio

from argbridge.config.settings import Settings
from argbridge.runtime import App
from tests.support.ops import control_tcp_url, listening


@contextlib.asynccontextmanager
async def running_app(s: Settings, **kw: Any) -> AsyncIterator[tuple[App, str]]:
    app = App(s, handle_signals=False, **kw)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
            await listening(app)
        try:
            yield app, control_tcp_url(app)
        finally:
            app.request_shutdown()
            with anyio.fail_after(15):
                await app.stopped.wait()
