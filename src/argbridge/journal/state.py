"""The state store: small durable values (last SSE id, Slack thread ts, endpoint state,
followed runs), written through the shared group commit."""

from __future__ import annotations

from argbridge.journal import store
from argbridge.journal.engine import Engine
from argbridge.journal.ops import DeleteState, SetState
from argbridge.journal.writer import ReadThread, Writer


class StateStore:
    """``get``/``set``/``delete`` of string values by key."""

    def __init__(self, writer: Writer, reads: ReadThread) -> None:
        self._writer = writer
        self._reads = reads

    async def get_state(self, key: str) -> str | None:
        def read(db: Engine) -> str | None:
            raw = db.get(store.state_key(key))
            return None if raw is None else store.unpack_state(raw)[1]

        return await self._reads.run(read)

    async def set_state(self, key: str, value: str) -> None:
        """Durably remember a small value; returns once committed."""
        await self._writer.submit(SetState(key, value))

    async def delete_state(self, key: str) -> None:
        await self._writer.submit(DeleteState(key))
