"""Run a whole :class:`argbridge.runtime.App` in-process for control-API/CLI tests.

Yields the app and the base URL of its webhook listener (``/webhooks/*``, ``/readyz``);
the control API is reached with :func:`tests.support.ops.control_client` (socket) or
:func:`tests.support.ops.control_tcp_url` (``control.port``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio

from argbridge.config.settings import Settings
from argbridge.runtime import App
from tests.support.ops import base_url, listening


@contextlib.asynccontextmanager
async def running_app(s: Settings, **kw: Any) -> AsyncIterator[tuple[App, str]]:
    app = App(s, handle_signals=False, **kw)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
            await listening(app)
        try:
            yield app, base_url(app)
        finally:
            app.request_shutdown()
            with anyio.fail_after(15):
                await app.stopped.wait()
