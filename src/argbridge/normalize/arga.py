"""Arga payloads → CloudEvents: validation results (SSE) and demo-runner messages (WS).

Types (``prefix`` is the configured ``type_prefix``):

- results SSE step/progress event ``{"type": T, ...}`` → ``arga.validation.<T>``;
- results SSE ``{"type": "run_<status>", "status": ...}`` → ``arga.validation.run.<status>``;
- demo-runner ``{"type": "event", "event": {"type": T, ...}}`` → ``arga.demorun.<T>``;
- demo-runner ``{"type": "done", "status": S}`` → ``arga.demorun.done`` (status in ``data``).

Ids are deterministic: from the upstream event id when there is one, else from the
content, so a replayed or gap-filled event gets the id it had the first time.
``data`` holds a normalised view plus the untouched payload under ``data.upstream``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from argbridge.events import CloudEvent, deterministic_id, now_rfc3339

TERMINAL_STATUSES = frozenset({"completed", "complete", "failed", "cancelled", "canceled"})
_TYPE_PART = re.compile(r"[^A-Za-z0-9_.-]+")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _type_part(value: Any, default: str) -> str:
    text = _TYPE_PART.sub("_", str(value)).strip("._") if value not in (None, "") else ""
    return text or default


def content_hash(payload: Any) -> str:
    """A stable hash of a JSON value (keys sorted)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _time(value: Any) -> str:
    return value if isinstance(value, str) and _RFC3339.match(value) else now_rfc3339()


def _pick(payload: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if payload.get(name) not in (None, ""):
            return payload[name]
    return None


def is_terminal_results_event(payload: Mapping[str, Any]) -> bool:
    t = payload.get("type")
    return isinstance(t, str) and t.startswith("run_") and t[4:] in TERMINAL_STATUSES


def results_event(
    run_id: str,
    payload: Mapping[str, Any],
    *,
    upstream_id: str | None = None,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
) -> CloudEvent:
    """Normalise one results-stream event of validation run ``run_id``."""
    raw_type = payload.get("type")
    if isinstance(raw_type, str) and raw_type.startswith("run_"):
        ce_type = f"{prefix}arga.validation.run.{_type_part(raw_type[4:], 'unknown')}"
    else:
        ce_type = f"{prefix}arga.validation.{_type_part(raw_type, 'message')}"
    identity = upstream_id if upstream_id else "sha:" + content_hash(payload)
    step = _pick(payload, "step_number", "step", "index")
    status = _pick(payload, "status", "result")
    data = {
        "run_id": run_id,
        "kind": raw_type,
        "status": status,
        "step": step,
        "title": _pick(payload, "title", "name", "step_title"),
        "message": _pick(payload, "message", "description", "details"),
        "urls": {"run": f"{base_url.rstrip('/')}/runs/{run_id}"},
        "upstream": dict(payload),
    }
    return CloudEvent(
        id=deterministic_id("arga-results", run_id, identity),
        source=f"{base_url.rstrip('/')}/validate/{run_id}/results",
        type=ce_type,
        subject=run_id,
        time=_time(_pick(payload, "timestamp", "time", "created_at")),
        data=data,
        partitionkey=run_id,
        sequence=step if isinstance(step, int) and not isinstance(step, bool) else None,
        severity="high" if status in ("fail", "failed", "error") else None,
    )


def demorun_event(
    run_id: str,
    message: Mapping[str, Any],
    *,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
) -> CloudEvent | None:
    """Normalise one demo-runner WebSocket message; ``None`` for messages that carry no
    event (e.g. browser stream frames)."""
    kind = message.get("type")
    source = f"{base_url.rstrip('/')}/demo-runner/runs/{run_id}"
    if kind == "event" and isinstance(message.get("event"), Mapping):
        event = message["event"]
        event_type = _type_part(event.get("type"), "message")
        identity = event.get("id") or "sha:" + content_hash(event)
        return CloudEvent(
            id=deterministic_id("arga-demorun", run_id, str(identity)),
            source=source,
            type=f"{prefix}arga.demorun.{event_type}",
            subject=run_id,
            time=_time(event.get("timestamp")),
            data={
                "run_id": run_id,
                "event_id": event.get("id"),
                "kind": event.get("type"),
                "message": event.get("message"),
                "details": event.get("details"),
                "urls": {"run": source},
                "upstream": dict(message),
            },
            partitionkey=run_id,
        )
    if kind == "done":
        status = message.get("status")
        return CloudEvent(
            id=deterministic_id("arga-demorun", run_id, "done"),
            source=source,
            type=f"{prefix}arga.demorun.done",
            subject=run_id,
            time=now_rfc3339(),
            data={
                "run_id": run_id,
                "status": status,
                "message": message.get("message"),
                "urls": {"run": source},
                "upstream": dict(message),
            },
            partitionkey=run_id,
            severity="high" if status == "failed" else None,
        )
    return None
