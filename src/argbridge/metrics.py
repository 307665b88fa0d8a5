"""Prometheus metrics, named after Vector's component specification.

Owns the metric families every component reports through (one :class:`Metrics` per
daemon, each with its own registry so tests can run several in one process):

- ``argbridge_component_received_events_total{component,kind}``: accepted into the journal
  (sources) or read from it (sinks); ``..._received_event_bytes_total`` their JSON size;
- ``argbridge_component_sent_events_total{component,kind}``: only on confirmed delivery;
  ``..._sent_event_bytes_total`` their JSON size;
- ``argbridge_component_errors_total{component,kind,error_type}``;
- ``argbridge_component_discarded_events_total{component,kind,reason}``: duplicates,
  rejected frames, opt-in drops;
- journal gauges (backlog per sink, bytes, paused), delivery latency, reconnects, open
  streams, dead letters and pending retries per sink (refreshed from the journal at scrape
  time, :meth:`Metrics.refresh`), circuit-breaker state, component restarts.

Names follow Vector's component specification (``component_received_events_total``,
``component_received_event_bytes_total``, ``component_sent_events_total``,
``component_sent_event_bytes_total``, ``component_errors_total{error_type}``,
``component_discarded_events_total``) with an ``argbridge_`` prefix; Vector's
``component_id``/``component_kind`` tags are ``component``/``kind`` here, and its
``intentional`` tag on discards is the more specific ``reason``.

Label values never contain secrets (component names come from config keys).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from argbridge.journal import Journal

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The daemon's metric families."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "argbridge_component_received_events",
            "Events received by a component (sources: accepted into the journal).",
            ["component", "kind"],
            registry=r,
        )
        self.received_bytes = Counter(
            "argbridge_component_received_event_bytes",
            "Bytes (JSON) of events received by a component.",
            ["component", "kind"],
            registry=r,
        )
        self.sent = Counter(
            "argbridge_component_sent_events",
            "Events a component delivered, counted only after the destination confirmed.",
            ["component", "kind"],
            registry=r,
        )
        self.sent_bytes = Counter(
            "argbridge_component_sent_event_bytes",
            "Bytes (JSON) of events a component delivered, counted on confirmed delivery.",
            ["component", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "argbridge_component_errors",
            "Errors by component and error type.",
            ["component", "kind", "error_type"],
            registry=r,
        )
        self.discarded = Counter(
            "argbridge_component_discarded_events",
            "Events a component discarded (duplicates, rejected input, opt-in drops).",
            ["component", "kind", "reason"],
            registry=r,
        )
        self.delivery_latency = BatchHistogram(
            "argbridge_delivery_latency_seconds",
            "From journal commit to the destination's confirmation.",
            "component",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter(
            "argbridge_source_reconnects",
            "Upstream reconnect attempts.",
            ["component"],
            registry=r,
        )
        self.open_streams = Gauge(
            "argbridge_source_open_streams",
            "Upstream streams currently open.",
            ["component"],
            registry=r,
        )
        self.auth_failures = Counter(
            "argbridge_source_auth_failures",
            "Streams stopped because the upstream refused our credentials.",
            ["component"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "argbridge_sink_circuit_breaker_state",
            "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
            ["component"],
            registry=r,
        )
        self.restarts = Counter(
            "argbridge_component_restarts",
            "Times the supervisor restarted a crashed component.",
            ["component", "kind"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "argbridge_sink_dead_letters",
            "Events in the dead-letter table per sink.",
            ["component"],
            registry=r,
        )

        self.retries_pending = Gauge(
            "argbridge_sink_retries_pending",
            "Events a sink owes a scheduled redelivery (webhook retry schedule) per sink.",
            ["component"],
            registry=r,
        )
        # Cluster mode's delivery consumers (argbridge.cluster.delivery).
        self.dedupe_rebuild = Histogram(
            "argbridge_delivery_dedupe_rebuild_seconds",
            "Time to re-read the dedupe window of newly assigned events-topic partitions.",
            ["component"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.retries_scheduled = Counter(
            "argbridge_delivery_retries_scheduled",
            "Deliveries moved to a Kafka retry topic (cluster mode), per sink.",
            ["component"],
            registry=r,
        )

    async def refresh(self, journal: Journal) -> None:
        """Update the gauges that need a journal query (dead letters, pending retries);
        called at scrape time (``/metrics``) and by ``argbridge status``."""
        if journal.closed:
            return
        for sink in journal.sinks:
            self.dead_letters.labels(sink).set(await journal.count_dead_letters(sink))
            self.retries_pending.labels(sink).set(await journal.count_retries(sink))

    def watch_journal(self, journal: Journal) -> None:
        """Expose the journal's backlog as gauges, read at scrape time."""
        self.registry.register(_JournalCollector(lambda: journal))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class BatchHistogram(Collector):
    """A histogram with one label that also takes a whole batch of observations in one
    call (:meth:`HistogramChild.observe_many`); exposed as ``prometheus_client``'s
    ``Histogram`` exposes one (``_bucket``, ``_count``, ``_sum``; no ``_created``).

    Hand-written on the registry's public collector API because ``prometheus_client``
    has no batch observe: a sink confirms thousands of events at once, and its
    ``observe`` per event (a bucket walk and two locked increments) was about 1 µs of
    the Kafka sink's CPU per event.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        *,
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self._children: dict[str, HistogramChild] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, value: str) -> HistogramChild:
        child = self._children.get(value)
        if child is None:
            with self._lock:
                child = self._children.setdefault(value, HistogramChild(self.bounds))
        return child

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        les = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        for value, child in list(self._children.items()):
            counts, total = child.snapshot()
            cumulative, buckets = 0, []
            for le, n in zip(les, counts, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            family.add_metric([value], buckets, total)
        yield family


class HistogramChild:
    """One labelled series of a :class:`BatchHistogram`."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, amount: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self._bounds, amount)] += 1
            self._sum += amount

    def observe_many(self, amounts: Iterable[float]) -> None:
        """:meth:`observe` each of ``amounts``, a negative one as 0 (a latency across a
        clock step). A run of equal values (the events of one group commit) looks its
        bucket up once."""
        bounds, find = self._bounds, bisect.bisect_left
        with self._lock:
            counts = self._counts
            last, i, value, total = math.nan, 0, 0.0, 0.0
            for amount in amounts:
                if amount != last:
                    last = amount
                    value = amount if amount > 0.0 else 0.0
                    i = find(bounds, value)
                counts[i] += 1
                total += value
            self._sum += total

    def snapshot(self) -> tuple[list[int], float]:
        """The per-bucket (not cumulative) counts and the sum."""
        with self._lock:
            return list(self._counts), self._sum


class _JournalCollector(Collector):
    def __init__(self, get: Callable[[], Journal]) -> None:
        self._get = get

    def collect(self) -> Iterable[Metric]:
        journal = self._get()
        if journal.closed:
            return
        stats = journal.stats()
        backlog = GaugeMetricFamily(
            "argbridge_journal_backlog_events",
            "Events journaled but not yet acknowledged, per sink.",
            labels=["component"],
        )
        for sink, n in stats.backlog_events.items():
            backlog.add_metric([sink], n)
        yield backlog
        yield GaugeMetricFamily(
            "argbridge_journal_backlog_bytes",
            "Bytes of events not yet acknowledged by the slowest sink.",
            value=stats.backlog_bytes,
        )
        yield GaugeMetricFamily(
            "argbridge_journal_paused",
            "1 while sources are paused (backpressure, or intake held: disk full).",
            value=1 if stats.paused else 0,
        )
        yield GaugeMetricFamily(
            "argbridge_journal_last_seq",
            "Sequence number of the newest event.",
            value=stats.last_seq,
        )
