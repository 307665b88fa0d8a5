"""The demo's live summary: a snapshot of the daemon's metrics, formatted for a terminal.

Pure: :func:`take_snapshot` reads a :class:`~argbridge.metrics.Metrics` registry (sources'
received counters, sinks' sent counters, the delivery-latency histogram) plus the
journal's :class:`~argbridge.journal.JournalStats` and the demo's own counters (receiver,
Slack console, Kafka records, Argus sender) into a frozen :class:`Snapshot`;
:func:`quantile` estimates p50/p99 from cumulative histogram buckets the way
Prometheus' ``histogram_quantile`` does (linear within a bucket); :func:`format_summary`
renders the snapshot as a small table (ANSI styling only through the given
:class:`~argbridge.demo.console.Console`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from argbridge.demo.console import Console
from argbridge.journal import JournalStats
from argbridge.metrics import Metrics


@dataclass(frozen=True, slots=True)
class SinkLine:
    name: str
    type: str
    #: Routed to this sink and read from the journal (``received``) / confirmed (``sent``).
    received: int
    sent: int
    backlog: int
    p50: float | None
    p99: float | None
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    elapsed: float
    sources: Mapping[str, int]
    sinks: Sequence[SinkLine]
    last_seq: int = 0
    paused: bool = False
    #: Discarded events by reason (duplicates, rejected input, backpressure 503s…).
    discarded: Mapping[str, int] = field(default_factory=dict)
    #: Destinations' own view: label → text (receiver, Slack console, Kafka, Argus).
    destinations: Mapping[str, str] = field(default_factory=dict)
    notes: Sequence[str] = ()


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: ``buckets`` are (upper bound, cumulative count) sorted by
    bound, ending with ``+Inf``; ``None`` when empty."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # beyond the last finite bucket: its bound is all we know
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _samples(metrics: Metrics, family: str) -> list[tuple[str, dict[str, str], float]]:
    out: list[tuple[str, dict[str, str], float]] = []
    for metric in metrics.registry.collect():
        if metric.name == family:
            out.extend((s.name, s.labels, s.value) for s in metric.samples)
    return out


def counter_by_component(metrics: Metrics, family: str, kind: str) -> dict[str, int]:
    """``{component: total}`` of a ``component,kind`` counter for one ``kind``."""
    out: dict[str, int] = {}
    for name, labels, value in _samples(metrics, family):
        if name.endswith("_total") and labels.get("kind") == kind:
            comp = labels.get("component", "?")
            out[comp] = out.get(comp, 0) + int(value)
    return out


def latency_buckets(metrics: Metrics) -> dict[str, list[tuple[float, float]]]:
    """``{sink: [(le, cumulative count), ...]}`` of the delivery-latency histogram."""
    out: dict[str, list[tuple[float, float]]] = {}
    for name, labels, value in _samples(metrics, "argbridge_delivery_latency_seconds"):
        if name.endswith("_bucket"):
            out.setdefault(labels["component"], []).append((float(labels["le"]), value))
    for buckets in out.values():
        buckets.sort()
    return out


def take_snapshot(
    metrics: Metrics,
    stats: JournalStats | None,
    *,
    elapsed: float,
    sources: Sequence[str],
    sinks: Mapping[str, str],
    destinations: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> Snapshot:
    """Read the metrics; ``sinks`` maps sink name → type (in display order)."""
    received = counter_by_component(metrics, "argbridge_component_received_events", "source")
    read = counter_by_component(metrics, "argbridge_component_received_events", "sink")
    sent = counter_by_component(metrics, "argbridge_component_sent_events", "sink")
    errors = counter_by_component(metrics, "argbridge_component_errors", "sink")
    discarded: dict[str, int] = {}
    for name, labels, value in _samples(metrics, "argbridge_component_discarded_events"):
        if name.endswith("_total") and value:
            reason = labels.get("reason", "?")
            discarded[reason] = discarded.get(reason, 0) + int(value)
    buckets = latency_buckets(metrics)
    lines = []
    for name, type_ in sinks.items():
        b = buckets.get(name, [])
        lines.append(
            SinkLine(
                name=name,
                type=type_,
                received=read.get(name, 0),
                sent=sent.get(name, 0),
                backlog=stats.backlog_events.get(name, 0) if stats else 0,
                p50=quantile(0.5, b),
                p99=quantile(0.99, b),
                errors=errors.get(name, 0),
            )
        )
    return Snapshot(
        elapsed=elapsed,
        sources={name: received.get(name, 0) for name in sources},
        sinks=lines,
        last_seq=stats.last_seq if stats else 0,
        paused=stats.paused if stats else False,
        discarded=discarded,
        destinations=dict(destinations or {}),
        notes=tuple(notes),
    )


def format_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{seconds:.2f}s"


def format_summary(snap: Snapshot, console: Console | None = None, title: str = "") -> list[str]:
    """The summary as lines (plain unless ``console`` does colour)."""
    c = console or Console(colour=False)
    state = c.style("PAUSED (backpressure)", "amber") if snap.paused else "flowing"
    head = title or f"argbridge demo · {snap.elapsed:.0f}s"
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(snap.discarded.items()))
    lines = [
        c.style(f"── {head} ", "bold")
        + f"── journal seq {snap.last_seq} · sources {state}"
        + (f" · discarded: {dropped}" if dropped else ""),
        c.style(f"  {'source':<10} {'events':>8}", "dim"),
    ]
    for name, count in snap.sources.items():
        lines.append(f"  {name:<10} {count:>8}")
    lines.append(
        c.style(
            f"  {'sink':<10} {'type':<8} {'received':>8} {'sent':>8} {'p50':>8} {'p99':>8}"
            f" {'backlog':>8} {'errors':>7}",
            "dim",
        )
    )
    for s in snap.sinks:
        lines.append(
            f"  {s.name:<10} {s.type:<8} {s.received:>8} {s.sent:>8} {format_ms(s.p50):>8} "
            f"{format_ms(s.p99):>8} {s.backlog:>8} {s.errors:>7}"
        )
    for label, text in snap.destinations.items():
        lines.append(f"  {label}: {text}")
    lines.extend(f"  {note}" for note in snap.notes)
    return lines
