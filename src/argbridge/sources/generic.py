"""What the generic ``sse``, ``websocket`` and ``poll`` sources share at run time.

Owns :class:`GenericSource`: the source's status (``starting``, ``following``,
``done``, or the reason it stopped), its health, its :class:`EventSpec` built from the
config (type stem, mapping, size cap), and :func:`note_replaced`, which counts and
logs (throttled) the fields replaced by the event-size cap.
"""

from __future__ import annotations

import anyio

from argbridge.config.settings import Settings
from argbridge.config.streams import HttpSourceBase
from argbridge.logging import Throttle
from argbridge.normalize.oversize import Replaced
from argbridge.normalize.stream import EventSpec
from argbridge.reconnect import ReconnectPolicy
from argbridge.sinks.base import Health
from argbridge.sources.base import SourceContext
from argbridge.sources.upstream import safe_url

#: Statuses in which a source still does (or did) its job.
HEALTHY = frozenset({"starting", "following", "polling", "done"})


class GenericSource:
    """Base of the generic sources (status, health, event spec)."""

    kind = "generic"

    def __init__(self, name: str, config: HttpSourceBase, settings: Settings) -> None:
        self.name = name
        self.config = config
        self.settings = settings
        self.status = "starting"
        self.detail = ""
        #: Set once the source runs (or finished at once: a stream already done).
        self.started = anyio.Event()
        #: Set when the source stops for good (done, or stopped by the policy).
        self.stopped = anyio.Event()
        self.throttle = Throttle()

    def spec(self, ctx: SourceContext, url: str, run_id: str = "") -> EventSpec:
        cfg = self.config
        link = cfg.link.replace("{run_id}", run_id) if cfg.link else None
        return EventSpec(
            source_name=self.name,
            ce_source=cfg.ce_source or safe_url(url),
            ce_type=cfg.ce_type,
            prefix=ctx.type_prefix,
            mapping=cfg.mapping.compile(),
            max_event_bytes=cfg.max_event_bytes,
            link=link,
        )

    def new_policy(self) -> ReconnectPolicy:
        r = self.config.reconnect
        return ReconnectPolicy(initial=r.initial, cap=r.max, factor=r.factor)

    def stop(self, status: str, detail: str = "") -> None:
        self.status = status
        self.detail = detail
        self.started.set()
        self.stopped.set()

    def health(self) -> Health:
        if self.status in HEALTHY:
            return Health(True, self.status)
        return Health(False, f"stopped: {self.status} {self.detail}".strip())


def note_replaced(
    ctx: SourceContext, throttle: Throttle, replaced: list[Replaced], **fields: object
) -> None:
    """Count the fields the size cap replaced; log it (at most 5 a minute)."""
    ctx.metrics.discarded.labels(ctx.name, "source", "oversized_field").inc(len(replaced))
    suppressed = throttle.allow("oversized_field", ctx.clock.monotonic())
    if suppressed is None:
        return
    ctx.log.warning(
        "source.field_replaced",
        fields=[r.path for r in replaced],
        sizes=[r.size for r in replaced],
        suppressed=suppressed or None,
        **fields,
    )
