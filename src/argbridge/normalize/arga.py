"""Arga payloads → CloudEvents: validation results (SSE) and demo-runner messages (WS).

Types (``prefix`` is the configured ``type_prefix``):

- results SSE step/progress event ``{"type": T, ...}`` → ``arga.validation.<T>``;
- results SSE ``{"type": "run_<status>", "status": ...}`` → ``arga.validation.run.<status>``;
- demo-runner ``{"type": "event", "event": {"type": T, ...}}`` → ``arga.demorun.<T>``;
- demo-runner ``{"type": "done", "status": S}`` → ``arga.demorun.done`` (status in ``data``).

Ids are deterministic, so a replayed or gap-filled event gets the id it had the first
time and the journal drops the overlap:

- a step result (``{"type": "step_result", "step_number": N, ...}`` on the stream, or
  item ``N`` of ``results_json`` from ``GET /runs/{run_id}``) → ``step:N:result``;
- the terminal ``run_<status>`` event (stream, or the run's terminal ``status``) →
  ``terminal`` (one per run);
- other stream events → the SSE ``id``, else a hash of the content;
- demo-runner events → ``event.id`` (the same in the WebSocket message and in the run's
  ``events_json``), else a hash; ``done`` → ``done``.
``data`` holds a normalised view plus the untouched payload under ``data.upstream``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from argbridge.errors import EventError
from argbridge.events import (
    SPECVERSION,
    CloudEvent,
    ExtensionValue,
    deterministic_id,
    now_rfc3339,
)

TERMINAL_STATUSES = frozenset({"completed", "complete", "failed", "cancelled", "canceled"})
_TYPE_PART = re.compile(r"[^A-Za-z0-9_.-]+")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@functools.lru_cache(maxsize=4096)
def _clean_type(value: str, default: str) -> str:
    return _TYPE_PART.sub("_", value).strip("._") or default


def _type_part(value: Any, default: str) -> str:
    if value in (None, ""):
        return default
    return _clean_type(value if isinstance(value, str) else str(value), default)


def content_hash(payload: Any) -> str:
    """A stable hash of a JSON value (keys sorted)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _time(value: Any, now: str | None = None) -> str:
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    return now or now_rfc3339()


def _pick(payload: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if payload.get(name) not in (None, ""):
            return payload[name]
    return None


def is_terminal_results_event(payload: Mapping[str, Any]) -> bool:
    t = payload.get("type")
    return isinstance(t, str) and t.startswith("run_") and t[4:] in TERMINAL_STATUSES


STEP_RESULT_TYPES = frozenset({"step_result", "step_completed", "step_finished", "step_done"})
STEP_RESULT_STATUSES = frozenset({"pass", "fail", "error", "passed", "failed", "skipped"})


def results_identity(payload: Mapping[str, Any], step: Any, upstream_id: str | None) -> str:
    """The identity a results event keeps however it reaches us (stream or gap-fill)."""
    if is_terminal_results_event(payload):
        return "terminal"
    kind = payload.get("type")
    if step is not None and not isinstance(step, bool | dict | list):
        if kind in STEP_RESULT_TYPES or (
            kind in (None, "") and payload.get("status") in STEP_RESULT_STATUSES
        ):
            return f"step:{step}:result"
    return upstream_id if upstream_id else "sha:" + content_hash(payload)


#: The fields of one Arga event besides its subject and partition key (both the run id):
#: id, source, type, time, data, sequence, severity.
_Fields = tuple[str, str, str, str, dict[str, Any], int | None, str | None]


def _results_fields(
    run_id: str,
    payload: Mapping[str, Any],
    upstream_id: str | None,
    base_url: str,
    prefix: str,
    now: str | None,
) -> _Fields:
    """The fields of a results event: what :func:`results_event` and
    :func:`results_parts` build from."""
    raw_type = payload.get("type")
    if isinstance(raw_type, str) and raw_type.startswith("run_"):
        ce_type = f"{prefix}arga.validation.run.{_type_part(raw_type[4:], 'unknown')}"
    else:
        ce_type = f"{prefix}arga.validation.{_type_part(raw_type, 'message')}"
    step = _pick(payload, "step_number", "step", "index")
    status = _pick(payload, "status", "result")
    base = base_url.rstrip("/")
    data = {
        "run_id": run_id,
        "kind": raw_type,
        "status": status,
        "step": step,
        "title": _pick(payload, "title", "name", "step_title"),
        "message": _pick(payload, "message", "description", "details"),
        "urls": {"run": f"{base}/runs/{run_id}"},
        "upstream": payload if type(payload) is dict else dict(payload),
    }
    return (
        deterministic_id("arga-results", run_id, results_identity(payload, step, upstream_id)),
        f"{base}/validate/{run_id}/results",
        ce_type,
        _time(_pick(payload, "timestamp", "time", "created_at"), now),
        data,
        step if isinstance(step, int) and not isinstance(step, bool) else None,
        "high" if status in ("fail", "failed", "error") else None,
    )


def _event(run_id: str, fields: _Fields) -> CloudEvent:
    event_id, source, ce_type, time, data, sequence, severity = fields
    return CloudEvent(
        id=event_id,
        source=source,
        type=ce_type,
        subject=run_id,
        time=time,
        data=data,
        partitionkey=run_id,
        sequence=sequence,
        severity=severity,
    )


def _parts(run_id: str, fields: _Fields) -> tuple[str, dict[str, ExtensionValue], dict[str, Any]]:
    """The id, the attributes (in :meth:`~argbridge.events.CloudEvent.attributes` order)
    and the data of :func:`_event`, without building it. Every attribute is valid by
    construction (a constant, the id, a cleaned type, ``_time``'s checked time, an int
    sequence) except ``run_id``, checked here as ``CloudEvent`` would."""
    if not isinstance(run_id, str) or not run_id:
        raise EventError("subject must be a non-empty string when present")
    event_id, source, ce_type, time, data, sequence, severity = fields
    attrs: dict[str, ExtensionValue] = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": ce_type,
        "subject": run_id,
        "time": time,
        "datacontenttype": "application/json",
        "partitionkey": run_id,
    }
    if sequence is not None:
        attrs["sequence"] = sequence
    if severity is not None:
        attrs["severity"] = severity
    return event_id, attrs, data


def results_event(
    run_id: str,
    payload: Mapping[str, Any],
    *,
    upstream_id: str | None = None,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    now: str | None = None,
) -> CloudEvent:
    """Normalise one results-stream event of validation run ``run_id`` (``now``: the
    time to use when the payload has no timestamp; default: the current time)."""
    return _event(run_id, _results_fields(run_id, payload, upstream_id, base_url, prefix, now))


def results_parts(
    run_id: str,
    payload: Mapping[str, Any],
    *,
    upstream_id: str | None = None,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    now: str | None = None,
) -> tuple[str, dict[str, ExtensionValue], dict[str, Any]]:
    """:func:`results_event` as its id, its attributes and its data, without building the
    ``CloudEvent``: the results stream's hot path, whose events go to the journal as
    bytes (:func:`argbridge.journal.records.encode_parts`, the same bytes as
    ``encoded(results_event(...))``; tests/normalize/test_arga.py compares them). Building
    and validating the object was ~40 % of normalising a stream event."""
    return _parts(run_id, _results_fields(run_id, payload, upstream_id, base_url, prefix, now))


def _demorun_fields(
    run_id: str,
    message: Mapping[str, Any],
    base_url: str,
    prefix: str,
    now: str | None,
) -> _Fields | None:
    """The fields of a demo-runner event (``None``: the message carries no event): what
    :func:`demorun_event` and :func:`demorun_parts` build from."""
    kind = message.get("type")
    source = f"{base_url.rstrip('/')}/demo-runner/runs/{run_id}"
    if kind == "event" and isinstance(message.get("event"), Mapping):
        event = message["event"]
        event_type = _type_part(event.get("type"), "message")
        identity = event.get("id") or "sha:" + content_hash(event)
        data = {
            "run_id": run_id,
            "event_id": event.get("id"),
            "kind": event.get("type"),
            "message": event.get("message"),
            "details": event.get("details"),
            "urls": {"run": source},
            "upstream": dict(message),
        }
        return (
            deterministic_id("arga-demorun", run_id, str(identity)),
            source,
            f"{prefix}arga.demorun.{event_type}",
            _time(event.get("timestamp"), now),
            data,
            None,
            None,
        )
    if kind == "done":
        status = message.get("status")
        data = {
            "run_id": run_id,
            "status": status,
            "message": message.get("message"),
            "urls": {"run": source},
            "upstream": dict(message),
        }
        return (
            deterministic_id("arga-demorun", run_id, "done"),
            source,
            f"{prefix}arga.demorun.done",
            now or now_rfc3339(),
            data,
            None,
            "high" if status == "failed" else None,
        )
    return None


def demorun_event(
    run_id: str,
    message: Mapping[str, Any],
    *,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    now: str | None = None,
) -> CloudEvent | None:
    """Normalise one demo-runner WebSocket message; ``None`` for messages that carry no
    event (e.g. browser stream frames). ``now``: the time of a ``done``, or of an event
    without a valid timestamp (default: the current time)."""
    fields = _demorun_fields(run_id, message, base_url, prefix, now)
    return None if fields is None else _event(run_id, fields)


def demorun_parts(
    run_id: str,
    message: Mapping[str, Any],
    *,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    now: str | None = None,
) -> tuple[str, dict[str, ExtensionValue], dict[str, Any]] | None:
    """:func:`demorun_event` as id, attributes and data, without the ``CloudEvent``: the
    demo-runner feed's hot path (as :func:`results_parts` for the results stream; the
    same bytes, compared in tests/normalize/test_arga.py)."""
    fields = _demorun_fields(run_id, message, base_url, prefix, now)
    return None if fields is None else _parts(run_id, fields)


def results_from_run(
    run_id: str,
    run: Mapping[str, Any],
    *,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    include_terminal: bool = True,
) -> list[CloudEvent]:
    """Gap-fill from ``GET /runs/{run_id}``: every step result in ``results_json`` and,
    when the run is terminal (and ``include_terminal``), its ``run_<status>`` event, with
    the ids the stream gives the same events."""
    return list(
        iter_results_from_run(
            run_id, run, base_url=base_url, prefix=prefix, include_terminal=include_terminal
        )
    )


def iter_results_from_run(
    run_id: str,
    run: Mapping[str, Any],
    *,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    include_terminal: bool = True,
) -> Iterator[CloudEvent]:
    """:func:`results_from_run` one event at a time, in the same order (a run of
    thousands of steps is not normalised all at once)."""
    results = run.get("results_json")
    if isinstance(results, list):
        for i, item in enumerate(results):
            if not isinstance(item, Mapping):
                continue
            payload: dict[str, Any] = {"type": "step_result", **item}
            payload["type"] = "step_result"
            if _pick(payload, "step_number", "step", "index") is None:
                payload["step_number"] = i + 1
            yield results_event(run_id, payload, base_url=base_url, prefix=prefix)
    status = run.get("status")
    if include_terminal and isinstance(status, str) and status in TERMINAL_STATUSES:
        terminal = {"type": f"run_{status}", "status": status}
        yield results_event(run_id, terminal, base_url=base_url, prefix=prefix)


DEMO_TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "canceled"})


def demorun_from_run(
    run_id: str,
    run: Mapping[str, Any],
    *,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
) -> list[CloudEvent]:
    """Gap-fill from ``GET /demo-runner/runs/{run_id}``: every entry of ``events_json``
    (same ids as on the WebSocket) and ``done`` when the run is terminal."""
    events: list[CloudEvent] = []
    log = run.get("events_json")
    if isinstance(log, list):
        for item in log:
            if isinstance(item, Mapping):
                ev = demorun_event(
                    run_id, {"type": "event", "event": dict(item)}, base_url=base_url, prefix=prefix
                )
                if ev is not None:
                    events.append(ev)
    status = run.get("status")
    if isinstance(status, str) and status in DEMO_TERMINAL_STATUSES:
        done: dict[str, Any] = {"type": "done", "status": status}
        if run.get("error_message"):
            done["message"] = run["error_message"]
        ev = demorun_event(run_id, done, base_url=base_url, prefix=prefix)
        if ev is not None:
            events.append(ev)
    return events


def auth_failed_event(
    source_name: str,
    run_id: str,
    stream: str,
    detail: str,
    *,
    at: float,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    vendor: str = "Arga",
) -> CloudEvent:
    """The alert raised when an upstream (Arga, or the upstream of a generic stream
    source, named by ``vendor``) refuses our credentials (401/403, WS close 1008)."""
    return CloudEvent(
        id=deterministic_id("auth-failed", source_name, stream, run_id, f"{at:.3f}"),
        source=f"urn:argbridge:source:{source_name}",
        type=f"{prefix}argbridge.source.auth_failed",
        subject=run_id,
        time=now_rfc3339(at),
        data={
            "source": source_name,
            "stream": stream,
            "run_id": run_id,
            "detail": detail,
            "message": f"{vendor} refused the credentials of source {source_name!r} ({detail});"
            " the stream is stopped until the key is fixed",
            "urls": {"api": base_url},
        },
        partitionkey=run_id,
        severity="high",
    )


def run_refused_event(
    source_name: str,
    run_id: str,
    stream: str,
    detail: str,
    *,
    missing: bool,
    at: float,
    base_url: str = "https://api.argalabs.com",
    prefix: str = "",
    vendor: str = "Arga",
    retry_hint: str | None = None,
) -> CloudEvent:
    """The alert raised when an upstream refuses one run or stream (401/403, close 1008:
    ``argbridge.source.auth_failed``) or does not know it (404, close 4404, a 1008 saying
    "not found": ``argbridge.source.run_not_found``). ``retry_hint`` (the Arga source:
    its other runs keep streaming, ``argbridge follow RUN_ID`` retries this one) ends the
    message; without it the message says the stream is stopped."""
    if missing:
        kind, what = "run_not_found", "does not know"
    else:
        kind, what = "auth_failed", "refused"
    tail = retry_hint if retry_hint is not None else "the stream is stopped"
    return CloudEvent(
        id=deterministic_id(kind, source_name, stream, run_id, f"{at:.3f}"),
        source=f"urn:argbridge:source:{source_name}",
        type=f"{prefix}argbridge.source.{kind}",
        subject=run_id,
        time=now_rfc3339(at),
        data={
            "source": source_name,
            "stream": stream,
            "run_id": run_id,
            "detail": detail,
            "message": f"{vendor} {what} run {run_id} of source {source_name!r} ({detail}); "
            + tail,
            "urls": {"api": base_url},
        },
        partitionkey=run_id,
        severity="high",
    )
