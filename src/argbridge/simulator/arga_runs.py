"""The Arga simulator's scriptable state: runs, their event scripts, and faults.

Owns :class:`Faults` (misbehaviour read at every request), :class:`ValidationRun` and
:class:`DemoRun` (what the simulated API knows about a run and how much of it has
happened: tests call ``publish``), and the default event scripts. No I/O; the server is
:mod:`argbridge.simulator.arga`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from argbridge.events import now_rfc3339

TERMINAL = frozenset({"complete", "completed", "failed", "cancelled"})


@dataclass
class Faults:
    """Misbehaviour, read at every request (tests change it while the server runs)."""

    #: Cut each SSE/WS connection abruptly after this many events (0: never).
    drop_every: int = 0
    #: Before a drop, write half of the next frame (a half-written frame).
    half_written: bool = False
    #: Resume from the start whatever ``Last-Event-ID`` says.
    ignore_last_event_id: bool = False
    #: Statuses for the next stream requests (SSE and WS handshakes), popped in order.
    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    content_type: str = "text/event-stream; charset=utf-8"
    bom: bool = False
    #: Heartbeat comments sent before the first event of each connection.
    heartbeats_first: int = 0
    #: ``retry:`` field sent at the start of each SSE connection.
    retry_ms: int | None = None
    #: End the SSE body cleanly (a clean EOF) after this many events (0: never).
    eof_every: int = 0
    #: Accept the WebSocket, then close it with 1008 at once, with this reason.
    ws_close_1008: bool = False
    ws_close_1008_reason: str = "unauthorized"
    #: WebSocket close code used for drops (1011: internal error, an abnormal close).
    ws_drop_code: int = 1011
    #: Send a malformed JSON frame before the first event of each connection.
    bad_json_first: bool = False
    #: A finished run streams its whole history (from ``Last-Event-ID``) instead of only
    #: its terminal event, and the WebSocket sends the published history first (bench).
    replay_history: bool = False
    #: ``GET /demo-runner/runs/{id}`` answers an empty ``events_json`` and a running
    #: status (bench: measure the WebSocket path, not the REST gap-fill).
    hide_history: bool = False
    #: SSE frames coalesced into one write when several are ready (bench: server speed).
    coalesce: int = 1
    #: Stream requests after the first ``gate_after`` wait until ``gate`` is set.
    gate_after: int = 0
    gate: anyio.Event | None = None


@dataclass
class _Run:
    """What both kinds of run share: the scripted events, how many are published, the
    status, and an event that wakes streams when more is published."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    published: int = 0
    status: str = "running"
    #: After the published events, send filler events of this many bytes forever (load
    #: and backpressure tests).
    flood_pad: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    def _advance(self, n: int | None) -> None:
        """Make the next ``n`` events (default: all) visible."""
        self.published = (
            len(self.events) if n is None else min(len(self.events), self.published + n)
        )

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class ValidationRun(_Run):
    """A validation run: its SSE events (ids 1..n) and step results."""

    repo: str = "acme/web-app"

    def publish(self, n: int | None = None) -> None:
        """Make the next ``n`` events (default: all) visible; the run turns terminal
        when its ``run_<status>`` event is published."""
        self._advance(n)
        last = self.events[self.published - 1] if self.published else {}
        if str(last.get("type", "")).startswith("run_") and last.get("status") in TERMINAL:
            self.status = str(last["status"])
        self._notify()

    def results_json(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in e.items() if k != "type"}
            for e in self.events[: self.published]
            if e.get("type") == "step_result"
        ]

    def details(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "status": self.status,
            "run_type": "pr_run",
            "repo_full_name": self.repo,
            "results_json": self.results_json(),
            "created_at": "2026-04-29T12:00:00Z",
        }


@dataclass
class DemoRun(_Run):
    """A demo run: its event log and final status."""

    final_status: str = "completed"

    def publish(self, n: int | None = None) -> None:
        """Publish the next ``n`` events (default all); all published → terminal."""
        self._advance(n)
        if self.published == len(self.events):
            self.status = self.final_status
        self._notify()

    def details(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "mode": "record_from_prompt",
            "status": self.status,
            "events_json": self.events[: self.published],
            "error_message": "Flow runner failed" if self.status == "failed" else None,
            "created_at": "2026-04-29T12:00:00Z",
        }


def validation_script(
    run_id: str, steps: int, *, pad: int = 0, final: str = "complete"
) -> list[dict[str, Any]]:
    """The SSE events of a run with ``steps`` steps (``pad`` bytes of filler each)."""
    events: list[dict[str, Any]] = [{"type": "run_started", "status": "running"}]
    for n in range(1, steps + 1):
        events.append({"type": "step_started", "step_number": n, "title": f"Step {n}"})
        result: dict[str, Any] = {
            "type": "step_result",
            "step_number": n,
            "title": f"Step {n}",
            "status": "pass" if final != "failed" or n < steps else "fail",
            "description": f"step {n} of {run_id}",
        }
        if pad:
            result["pad"] = "x" * pad
        events.append(result)
    events.append({"type": f"run_{final}", "status": final})
    return events


def demo_script(run_id: str, steps: int, *, pad: int = 0) -> list[dict[str, Any]]:
    """The event log of a demo run with ``steps`` events."""
    out = []
    for n in range(steps):
        kind = "created" if n == 0 else "running"
        ev: dict[str, Any] = {
            "id": f"{run_id}-e{n}",
            "type": kind,
            "message": f"event {n}",
            "details": {"n": n},
            "timestamp": now_rfc3339(),
        }
        if pad:
            ev["details"]["pad"] = "x" * pad
        out.append(ev)
    return out
