"""Configuration of the built-in ``replay`` source (the embedded default's sample feed).

The Arga sources live in :mod:`argbridge.config.arga`, the inbound webhook sources in
:mod:`argbridge.config.webhooks`; :mod:`argbridge.config.settings` joins them into
one union discriminated on ``type``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from argbridge.config.base import Duration, StrictModel

ReplayKind = Literal["sse", "ws", "webhook"]
REPLAY_KINDS: tuple[ReplayKind, ...] = ("sse", "ws", "webhook")


class ReplaySourceConfig(StrictModel):
    """Plays a recorded sample of upstream traffic through the real normalisers."""

    type: Literal["replay"]
    #: JSON-lines sample; default: the documented sample shipped in the package.
    sample: Path | None = None
    #: Pause between two replayed items.
    interval: Duration = 0.5
    #: Replay the sample again and again (each pass gets fresh ids).
    loop: bool = False
    #: Stop after this many passes when ``loop`` is on (0 = forever).
    max_passes: int = Field(default=0, ge=0)
    #: Sample item kinds to play (e.g. only ``webhook`` next to a simulated arga source).
    kinds: list[ReplayKind] = Field(default_factory=lambda: list(REPLAY_KINDS), min_length=1)
