"""Arga run discovery: poll the run listings and follow every non-terminal run.

Owns the polling loop over ``GET /validation/runs`` and ``GET /demo-runner/runs`` at
``poll_interval``. Each non-terminal run it sees is handed to the injected
:class:`Follow` role (the source's ``follow``, which ignores runs it already follows
or finished). A 401/403 means the key itself is refused: it raises the
``auth_failed`` alert once per outage, :attr:`Discovery.refused` says so (the source is
then not ready, :mod:`~argbridge.sources.arga.refusals`), and polling goes on at the
interval (the key may be fixed without a restart); other failures are counted and
logged.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from argbridge.config.arga import ArgaSourceConfig
from argbridge.normalize.arga import TERMINAL_STATUSES
from argbridge.sources.arga.api import ArgaApi
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import StreamAlert

LISTINGS = (
    ("validation", "/validation/runs", "items", "run_id"),
    ("demo", "/demo-runner/runs", "runs", "id"),
)


class Follow(Protocol):
    """Start following a run; ``False`` when it is followed or finished already."""

    async def __call__(self, run_id: str, kind: str, *, origin: str) -> bool: ...


def non_terminal_ids(body: Any, items_key: str, id_key: str) -> list[str]:
    """Run ids of the listing ``body`` whose status is not terminal (oldest first)."""
    items = body.get(items_key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"listing has no {items_key!r} array")
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        run_id, status = item.get(id_key), item.get("status")
        if isinstance(run_id, str) and run_id and status not in TERMINAL_STATUSES:
            out.append(run_id)
    out.reverse()
    return out


class Discovery:
    """The listing polls of one arga source."""

    def __init__(
        self,
        api: ArgaApi,
        config: ArgaSourceConfig,
        ctx: SourceContext,
        follow: Follow,
        alert: StreamAlert,
    ) -> None:
        self.api = api
        self.config = config
        self.ctx = ctx
        self.follow = follow
        self.alert = alert
        #: ``"GET /validation/runs answered 401"`` while a listing refuses the key.
        self.refused: str | None = None
        self.polls = 0

    async def once(self) -> int:
        """One poll of both listings; returns how many runs were newly followed."""
        cfg, ctx = self.config, self.ctx
        new = 0
        for kind, path, items_key, id_key in LISTINGS:
            if (kind == "validation" and not cfg.discover_validation) or (
                kind == "demo" and not cfg.discover_demo
            ):
                continue
            params = {"limit": "100"} if kind == "validation" else None
            try:
                response = await self.api.client.get(path, params=params)
            except httpx.TransportError as exc:
                ctx.metrics.errors.labels(ctx.name, "source", "discovery").inc()
                ctx.log.warning("arga.discovery_failed", listing=path, error=type(exc).__name__)
                continue
            if response.status_code in (401, 403):
                if self.refused is None:
                    await self.alert("-", "discovery", f"HTTP {response.status_code} on {path}")
                self.refused = f"GET {path} answered {response.status_code}"
                continue
            if response.status_code != 200:
                ctx.metrics.errors.labels(ctx.name, "source", "discovery").inc()
                ctx.log.warning("arga.discovery_failed", listing=path, status=response.status_code)
                continue
            try:
                ids = non_terminal_ids(response.json(), items_key, id_key)
            except ValueError as exc:
                ctx.reject("malformed_listing", listing=path, error=str(exc))
                continue
            self.refused = None
            for run_id in ids:
                if await self.follow(run_id, kind, origin="discovery"):
                    new += 1
        return new

    async def forever(self) -> None:
        """Poll at ``poll_interval`` until cancelled."""
        while True:
            new = await self.once()
            if new:
                self.ctx.log.info("arga.discovered", new=new)
            self.polls += 1
            await self.ctx.clock.sleep(self.config.poll_interval)
