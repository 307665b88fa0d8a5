"""W3C Trace Context (``traceparent``/``tracestate``) carried through argbridge. Pure.

Owns: reading the two headers of an inbound request into the CloudEvents
distributed-tracing extension (:func:`trace_extensions`: an event keeps them as its
``traceparent``/``tracestate`` attributes, so they are journaled with it), and the
headers a sink forwards them as (:func:`trace_headers`: outbound webhooks and Kafka
records carry ``traceparent``/``tracestate`` as they arrived), so a trace spans argbridge.

Parsing follows the W3C Trace Context rules: a ``traceparent`` that does not parse, has
an all-zero trace or parent id, or version ``ff``, is ignored — and so is ``tracestate``
then (it is meaningless without its parent). A higher version is accepted on its first
four fields; ``tracestate`` is kept as sent when it is at most 512 characters of
printable ASCII. Nothing is ever rejected for its trace headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from argbridge.events import TRACE_EXTENSIONS, CloudEvent

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16
MAX_TRACESTATE = 512


def valid_traceparent(value: str) -> bool:
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return False
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return False
    return not (version == "00" and rest)  # version 00 has exactly four fields


def valid_tracestate(value: str) -> bool:
    return 0 < len(value) <= MAX_TRACESTATE and value.isascii() and value.isprintable()


def trace_extensions(headers: Mapping[str, str]) -> dict[str, str]:
    """The extension attributes for an event from a request's (lower-case) headers;
    empty without a valid ``traceparent``."""
    parent = headers.get("traceparent")
    if parent is None or not valid_traceparent(parent):
        return {}
    out = {"traceparent": parent.strip()}
    state = headers.get("tracestate")
    if state is not None:
        state = state.strip()
        if valid_tracestate(state):
            out["tracestate"] = state
    return out


def with_trace(event: CloudEvent, headers: Mapping[str, str]) -> CloudEvent:
    """``event`` carrying the request's trace context (``event`` itself when none)."""
    trace = trace_extensions(headers)
    if not trace:
        return event
    return event.with_changes(extensions={**event.extensions, **trace})


def trace_headers(event: CloudEvent) -> dict[str, str]:
    """``traceparent``/``tracestate`` headers to forward for ``event`` (empty: none)."""
    ext = event.extensions
    if not ext:
        return {}
    return {name: str(ext[name]) for name in TRACE_EXTENSIONS if name in ext}
