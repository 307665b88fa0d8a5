"""Runs Arga refused or does not know, remembered; and whether the *key* is refused.

One refused run (401/403, WebSocket close 1008) or one missing run (404, close 4404, a
1008 saying "not found") is that run's problem: an alert event and a metric on the run,
never the source's readiness. The source is not ready only when the key itself is
refused: the run listing answers 401/403 (discovery on), or — with discovery off —
every followed run was refused. :meth:`Refusals.key_refused` says which, for the detail.

Refusals are kept in the journal's state (``arga:<source>:refused``) with a fingerprint
of the key they were made with, so a restart neither tries each refused run again nor
raises a new alert for it; ``argbridge follow RUN_ID`` retries one on purpose
(:meth:`Refusals.forget`), and a key change (a reload with a rotated key) clears them
all when the source starts with the new key.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import orjson

Reason = Literal["refused", "not_found"]


class StateStore(Protocol):
    """The journal's state store, the only part of the journal this uses."""

    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str) -> None: ...


def key_fingerprint(api_key: str) -> str:
    """A short hash naming the key (never the key itself)."""
    return hashlib.sha256(b"argbridge-refusals\x1f" + api_key.encode()).hexdigest()[:16]


def classify(detail: str) -> Reason:
    """A 1008 close whose reason says the run is not found is a missing run, not a
    refused key ("Test run not found"); everything else the policy alerts on is a
    refusal."""
    return "not_found" if "not found" in detail.lower() else "refused"


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str
    run_id: str
    reason: Reason
    detail: str
    at: float


class Refusals:
    """The refused and missing runs of one source (see the module docstring)."""

    def __init__(self, source: str, fingerprint: str) -> None:
        self.source = source
        self.fingerprint = fingerprint
        self.runs: dict[tuple[str, str], Refusal] = {}
        #: ``"GET /validation/runs answered 401"`` while the listing refuses the key.
        self.listing_refused: str | None = None

    @property
    def state_key(self) -> str:
        return f"arga:{self.source}:refused"

    async def load(self, store: StateStore) -> int:
        """Restore what was remembered with this key; refusals made with another key are
        cleared. Returns how many were dropped that way."""
        raw = await store.get_state(self.state_key)
        if not raw:
            return 0
        doc = orjson.loads(raw)
        items = doc.get("runs", []) if isinstance(doc, dict) else []
        if doc.get("key") != self.fingerprint:
            self.runs = {}
            await self._save(store)
            return len(items)
        self.runs = {(r["kind"], r["run_id"]): Refusal(**r) for r in items}
        return 0

    def get(self, kind: str, run_id: str) -> Refusal | None:
        return self.runs.get((kind, run_id))

    async def add(self, store: StateStore, refusal: Refusal) -> None:
        self.runs[(refusal.kind, refusal.run_id)] = refusal
        await self._save(store)

    async def forget(self, store: StateStore, kind: str, run_id: str) -> bool:
        """Drop one refusal (``argbridge follow RUN_ID`` retries it on purpose)."""
        if self.runs.pop((kind, run_id), None) is None:
            return False
        await self._save(store)
        return True

    async def _save(self, store: StateStore) -> None:
        doc = {"key": self.fingerprint, "runs": [asdict(r) for r in self.runs.values()]}
        await store.set_state(self.state_key, orjson.dumps(doc).decode())

    def key_refused(self, followed: dict[tuple[str, str], str], *, discovery: bool) -> str | None:
        """Why the key itself is refused, or ``None``. ``followed``: the status of each run
        the source knows this session (``following``, ``done``, ``auth_failed``…)."""
        if self.listing_refused is not None:
            return self.listing_refused
        if discovery:
            return None
        refused = {k for k, r in self.runs.items() if r.reason == "refused"}
        known = refused | set(followed)
        if refused and known <= refused:
            return f"Arga refused every followed run ({len(refused)})"
        return None
