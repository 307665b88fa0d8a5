"""The live summary: percentiles from histogram buckets, snapshots of real metrics."""

from __future__ import annotations

import math

import pytest

from argbridge.demo.console import Console
from argbridge.demo.summary import format_ms, format_summary, quantile, take_snapshot
from argbridge.journal import JournalStats
from argbridge.metrics import Metrics

INF = math.inf


def test_quantile_interpolates_within_a_bucket():
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (INF, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.7, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.9)


def test_quantile_edge_cases():
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    # Everything above the last finite bound: that bound is the best estimate.
    assert quantile(0.99, [(0.1, 0.0), (1.0, 0.0), (INF, 10.0)]) == 1.0
    # First bucket interpolates from zero.
    assert quantile(0.5, [(0.2, 10.0), (INF, 10.0)]) == pytest.approx(0.1)


def test_snapshot_reads_counters_and_histograms_of_real_metrics():
    m = Metrics()
    m.received.labels("arga", "source").inc(12)
    m.received.labels("argus", "source").inc(3)
    m.received.labels("file", "sink").inc(16)  # read from the journal: not a source
    m.sent.labels("file", "sink").inc(15)
    m.sent.labels("slack", "sink").inc(4)
    m.errors.labels("slack", "sink", "http_500").inc()
    m.discarded.labels("arga", "source", "duplicate").inc(2)
    for v in (0.002, 0.002, 0.004, 0.2):
        m.delivery_latency.labels("file").observe(v)
    stats = JournalStats(
        last_seq=15,
        cursors={"file": 15, "slack": 11},
        backlog_events={"file": 0, "slack": 4},
        backlog_bytes=100,
        paused=True,
        commits=3,
        appended=15,
        duplicates=2,
    )
    snap = take_snapshot(
        m,
        stats,
        elapsed=6.2,
        sources=["arga", "argus"],
        sinks={"file": "file", "slack": "slack"},
        destinations={"webhook receiver": "4 valid signatures, 0 invalid"},
    )
    assert snap.sources == {"arga": 12, "argus": 3}
    file_, slack = snap.sinks
    assert (file_.received, file_.sent, file_.backlog, file_.errors) == (16, 15, 0, 0)
    assert (slack.received, slack.sent, slack.backlog, slack.errors) == (0, 4, 4, 1)
    assert slack.p50 is None
    assert file_.p50 is not None and 0.001 < file_.p50 <= 0.0025
    assert file_.p99 is not None and 0.1 < file_.p99 <= 0.25
    assert snap.paused and snap.last_seq == 15 and snap.discarded == {"duplicate": 2}

    text = "\n".join(format_summary(snap, Console(colour=False)))
    assert "\x1b[" not in text
    assert "journal seq 15" in text and "PAUSED (backpressure)" in text
    assert "discarded: 2 duplicate" in text
    assert any(line.split()[:4] == ["file", "file", "16", "15"] for line in text.splitlines())
    assert any(line.split()[:4] == ["slack", "slack", "0", "4"] for line in text.splitlines())
    assert "webhook receiver: 4 valid signatures, 0 invalid" in text
    coloured = "\n".join(format_summary(snap, Console(colour=True)))
    assert "\x1b[" in coloured


def test_snapshot_without_journal_stats():
    snap = take_snapshot(Metrics(), None, elapsed=0, sources=["a"], sinks={"f": "file"})
    assert snap.sources == {"a": 0} and snap.sinks[0].sent == 0 and snap.last_seq == 0
    assert "sources flowing" in format_summary(snap)[0]


def test_format_ms():
    assert [format_ms(v) for v in (None, 0.0012, 0.05, 2.5)] == ["-", "1.2ms", "50ms", "2.50s"]
