"""``config/grafana-dashboard.json`` parses and only uses metrics the daemon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from argbridge.journal import Journal
from argbridge.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "config" / "grafana-dashboard.json"
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


async def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name the daemon's registry can expose (journal collector included)."""
    metrics = Metrics()
    async with Journal(tmp_path / "journal.db", sinks=["s"]) as journal:
        metrics.watch_journal(journal)
        names: set[str] = set()
        for family in metrics.registry.collect():
            for suffix in _SUFFIXES[family.type]:
                names.add(family.name + suffix)
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(query.get("query", ""))
    return exprs


async def test_every_metric_in_the_dashboard_is_exported(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exported = await exported_names(tmp_path)
    used = {m for e in expressions(dashboard) for m in re.findall(r"\bargbridge_\w+", e)}
    assert used, "the dashboard queries no argbridge metric"
    assert not used - exported, f"not exported by the daemon: {sorted(used - exported)}"


async def test_dashboard_covers_the_operational_signals(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    text = "\n".join(expressions(dashboard))
    for name in (
        "argbridge_component_received_events_total",
        "argbridge_component_sent_events_total",
        "argbridge_component_errors_total",
        "argbridge_journal_backlog_events",
        "argbridge_journal_paused",
        "argbridge_delivery_latency_seconds_bucket",
        "argbridge_source_reconnects_total",
        "argbridge_source_open_streams",
        "argbridge_sink_dead_letters",
        "argbridge_sink_circuit_breaker_state",
    ):
        assert name in text, f"no panel uses {name}"
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text


def test_dashboard_structure():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
