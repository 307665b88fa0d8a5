"""SourceContext: rejections are all counted, but their log lines are throttled."""

from __future__ import annotations

import orjson

from argbridge.metrics import Metrics
from argbridge.registry import build_source
from argbridge.sources.base import ServesHttp, SourceContext
from tests.conftest import settings
from tests.support.arga_fake import captured_logs
from tests.support.manual_clock import ManualClock


def rejected_lines(buf: str) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in buf.splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "source.rejected"]


async def test_a_flood_of_rejections_is_counted_in_full_and_logged_sparingly(journal):
    clock = ManualClock()
    metrics = Metrics()
    with captured_logs("info") as buf:
        ctx = SourceContext("hooks", journal, metrics, clock)
        for _ in range(1000):
            ctx.reject("bad_signature", status=401)
        ctx.reject("bad_json", status=400)  # another reason has its own allowance
        clock.advance(60)
        ctx.reject("bad_signature", status=401)
        lines = rejected_lines(buf.getvalue())
    count = metrics.registry.get_sample_value(
        "argbridge_component_discarded_events_total",
        {"component": "hooks", "kind": "source", "reason": "bad_signature"},
    )
    assert count == 1001
    reasons = [line["reason"] for line in lines]
    assert reasons == ["bad_signature"] * 5 + ["bad_json", "bad_signature"]
    assert "suppressed" not in lines[0]
    assert lines[-1]["suppressed"] == 995  # the next line says how many were held back


def test_only_sources_that_receive_over_http_declare_routes(tmp_path):
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXh4eA=="
    s = settings(
        tmp_path,
        http={"enabled": True, "port": 0},
        sources={
            "argus": {"type": "argus-webhook", "secrets": [secret]},
            "replay": {"type": "replay"},
        },
    )
    serving = {n for n, c in s.sources.items() if isinstance(build_source(n, c, s), ServesHttp)}
    assert serving == {"argus"}
