"""Runs Arga refused or does not know: the alert on the run, remembered; and whether the
*key* is refused.

One refused run (401/403, WebSocket close 1008) or one missing run (404, close 4404, a
1008 saying "not found") is that run's problem: :class:`RunAlerter` (the
:class:`~argbridge.sources.follower.StreamAlert` the source's followers get) raises an
alert event on the run (``argbridge.source.auth_failed`` / ``run_not_found``) and the
metric (``auth_failures`` / ``errors{reason="run_not_found"}``), never the source's
readiness. The source is not ready only when the key itself is refused: the run listing
answers 401/403 (discovery on), or, with discovery off, every followed run was refused.
:meth:`Refusals.key_refused` says which, for the detail.

Refusals are kept in the journal's state (``arga:<source>:refused``, through the
source's narrow journal role) with a fingerprint of the key they were made with, so a
restart neither tries each refused run again nor raises a new alert for it;
``argbridge follow RUN_ID`` retries one on purpose (:meth:`Refusals.forget`), and a key
change (a reload with a rotated key rebuilds the source) clears them all when the
source starts with the new key (:meth:`Refusals.load`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

from argbridge.normalize.arga import run_refused_event
from argbridge.sources.base import SourceContext
from argbridge.sources.state import StateStore

Reason = Literal["refused", "not_found"]

#: The run kind of each follower's stream name.
STREAM_KINDS = {"results": "validation", "demorun": "demo"}


def key_fingerprint(api_key: str) -> str:
    """A short hash naming the key (never the key itself)."""
    return hashlib.sha256(b"argbridge-refusals\x1f" + api_key.encode()).hexdigest()[:16]


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

    @property
    def state_key(self) -> str:
        return f"arga:{self.source}:refused"

    async def load(self, store: StateStore) -> int:
        """Restore what was remembered with this key; refusals made with another key are
        cleared. Returns how many were dropped that way."""
        self.runs = {}
        raw = await store.get_state(self.state_key)
        if not raw:
            return 0
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            return 0
        items = doc.get("runs", [])
        if doc.get("key") != self.fingerprint:
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

    def key_refused(
        self, followed: dict[tuple[str, str], str], *, discovery: bool, listing: str | None
    ) -> str | None:
        """Why the key itself is refused, or ``None``. ``followed``: the status of each run
        the source knows this session (``following``, ``done``, ``auth_failed``…);
        ``listing``: why the run listing refuses the key (discovery on), if it does."""
        if discovery:
            return listing
        refused = {k for k, r in self.runs.items() if r.reason == "refused"}
        known = refused | set(followed)
        if refused and known <= refused:
            return f"Arga refused every followed run ({len(refused)})"
        return None


class RunAlerter:
    """The :class:`~argbridge.sources.follower.StreamAlert` of an arga source's runs: an
    alert event + metric + error log on the run, and the refusal remembered."""

    def __init__(self, ctx: SourceContext, refusals: Refusals, *, base_url: str) -> None:
        self.ctx = ctx
        self.refusals = refusals
        self.base_url = base_url
        self.failures = 0
        self.missing = 0

    async def __call__(self, key: str, stream: str, detail: str, *, missing: bool = False) -> None:
        ctx = self.ctx
        if missing:
            self.missing += 1
            ctx.metrics.errors.labels(ctx.name, "source", "run_not_found").inc()
            ctx.log.error("arga.run_not_found", run_id=key, stream=stream, detail=detail)
        else:
            self.failures += 1
            ctx.metrics.auth_failures.labels(ctx.name).inc()
            ctx.log.error("arga.auth_failed", run_id=key, stream=stream, detail=detail)
        at = ctx.clock.time()
        await ctx.emit(
            run_refused_event(
                ctx.name,
                key,
                stream,
                detail,
                missing=missing,
                at=at,
                base_url=self.base_url,
                prefix=ctx.type_prefix,
                retry_hint="the source's other runs are unaffected; "
                f"`argbridge follow {key}` retries it",
            )
        )
        kind = STREAM_KINDS.get(stream, stream)
        refusal = Refusal(kind, key, "not_found" if missing else "refused", detail, at)
        await self.refusals.add(ctx.journal, refusal)
