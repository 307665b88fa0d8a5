"""The state-store role a source uses (resume points, started runs, finished streams).

The journal's state store implements it (``get_state``/``set_state``); a component that
keeps small durable values receives this role, never the whole journal.
"""

from __future__ import annotations

from typing import Protocol


class StateStore(Protocol):
    """Small durable values by key."""

    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str) -> None: ...
