"""The ``replay`` source: plays a recorded sample of upstream traffic through the real
normalisers into the journal (the embedded default of ``make run``).

Sample format (JSON lines, ``samples/replay.jsonl`` by default), one item per line:

- ``{"kind": "sse", "run_id": R, "id": "7", "data": {...}}``: an Arga results SSE event;
- ``{"kind": "ws", "run_id": R, "message": {...}}``: an Arga demo-runner WebSocket message;
- ``{"kind": "webhook", "source": "argus", "webhook_id": "msg_…", "body": {...}}``: an
  Argus incident webhook delivery.

With ``loop = true`` every pass rewrites run, incident and delivery ids with the pass
number, so each pass is new traffic rather than duplicates.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import orjson

from argbridge.config.settings import Settings
from argbridge.config.sources import ReplaySourceConfig
from argbridge.events import CloudEvent
from argbridge.normalize.arga import demorun_event, results_event
from argbridge.normalize.argus import incident_event
from argbridge.sinks.base import Health
from argbridge.sources.base import SourceContext


def load_sample(path: Path | None) -> list[dict[str, Any]]:
    """Read the sample (the packaged one when ``path`` is ``None``)."""
    if path is None:
        raw = resources.files("argbridge").joinpath("samples/replay.jsonl").read_bytes()
    else:
        raw = path.read_bytes()
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def to_event(item: dict[str, Any], *, prefix: str = "", suffix: str = "") -> CloudEvent | None:
    """Normalise one sample item (``suffix`` makes a looped pass's ids new)."""
    kind = item.get("kind")
    if kind == "sse":
        return results_event(
            item["run_id"] + suffix, item["data"], upstream_id=item.get("id"), prefix=prefix
        )
    if kind == "ws":
        return demorun_event(item["run_id"] + suffix, item["message"], prefix=prefix)
    if kind == "webhook":
        body = item["body"]
        if suffix and isinstance(body.get("incident"), dict):
            body = {**body, "incident": {**body["incident"], "id": body["incident"]["id"] + suffix}}
        return incident_event(
            item.get("source", "argus"),
            body,
            delivery_id=(item.get("webhook_id") or "") + suffix or None,
            prefix=prefix,
        )
    raise ValueError(f"unknown sample kind {kind!r}")


class ReplaySource:
    """Replays the sample at ``interval``, once or in a loop."""

    def __init__(self, name: str, config: ReplaySourceConfig, settings: Settings) -> None:
        self.name = name
        self.config = config
        self.items = [i for i in load_sample(config.sample) if i.get("kind") in config.kinds]
        self.passes = 0
        self.finished = False

    async def run(self, ctx: SourceContext) -> None:
        first = await ctx.journal.get_state(f"replay:{self.name}:passes")
        self.passes = int(first) if first else 0
        # A restart after the last pass of a bounded loop replays nothing more.
        while not (
            self.config.loop and self.config.max_passes and self.passes >= self.config.max_passes
        ):
            suffix = f"-p{self.passes}" if self.config.loop and self.passes else ""
            for n, item in enumerate(self.items):
                await ctx.wait_ready()
                try:
                    event = to_event(item, prefix=ctx.type_prefix, suffix=suffix)
                except (KeyError, ValueError, TypeError) as exc:
                    ctx.reject("malformed_sample", position=n, error=str(exc))
                    continue
                if event is not None:
                    status = await ctx.emit(event)
                    ctx.log.info(
                        "replay.event",
                        ce_type=event.type,
                        subject=event.subject,
                        status=status.value,
                    )
                await ctx.clock.sleep(self.config.interval)
            self.passes += 1
            await ctx.journal.set_state(f"replay:{self.name}:passes", str(self.passes))
            if not self.config.loop or (
                self.config.max_passes and self.passes >= self.config.max_passes
            ):
                break
        self.finished = True
        ctx.log.info("replay.finished", passes=self.passes)
        await anyio.sleep_forever()

    def health(self) -> Health:
        return Health(True, "finished" if self.finished else f"pass {self.passes}")
