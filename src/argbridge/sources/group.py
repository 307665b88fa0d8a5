"""Several sources run as one (a profile that expands to more than one generic source).

Owns :class:`SourceGroup`: runs its parts side by side with the group's context (they
share its name in metrics and logs; each keeps its own name for its state keys) and
reports one health: ready while every part is.
"""

from __future__ import annotations

import anyio

from argbridge.sinks.base import Health
from argbridge.sources.base import Source, SourceContext


class SourceGroup:
    """See the module docstring."""

    def __init__(self, name: str, parts: dict[str, Source]) -> None:
        self.name = name
        self.parts = parts

    async def run(self, ctx: SourceContext) -> None:
        async with anyio.create_task_group() as tg:
            for part in self.parts.values():
                tg.start_soon(part.run, ctx, name=f"{self.name}:{part.name}")

    def health(self) -> Health:
        healths = {name: part.health() for name, part in self.parts.items()}
        return Health(
            all(h.ready for h in healths.values()),
            "; ".join(f"{name}: {h.detail}" for name, h in healths.items()),
        )
