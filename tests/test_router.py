"""CloudEvents subscription filter dialects and routing."""

from __future__ import annotations

import pytest

from argbridge.config.settings import FilterConfig, RouteConfig
from argbridge.events import CloudEvent
from argbridge.router import Router, matches

EV = CloudEvent(
    id="1",
    source="https://api.argalabs.com/validate/r1/results",
    type="arga.validation.run.failed",
    subject="r1",
    severity="high",
    sequence=3,
    extensions={"flag": True},
)
ATTRS = EV.attributes()


def f(**kw):
    return FilterConfig.model_validate(kw)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"exact": {"type": "arga.validation.run.failed"}}, True),
        ({"exact": {"type": "arga.validation"}}, False),
        ({"exact": {"type": "arga.validation.run.failed", "subject": "r1"}}, True),
        ({"exact": {"type": "arga.validation.run.failed", "subject": "r2"}}, False),
        ({"exact": {"sequence": "3"}}, True),
        ({"exact": {"flag": "true"}}, True),
        ({"exact": {"missing": ""}}, False),
        ({"prefix": {"type": "arga."}}, True),
        ({"prefix": {"type": "argus."}}, False),
        ({"prefix": {"missing": ""}}, False),
        ({"suffix": {"type": ".failed"}}, True),
        ({"suffix": {"type": ".completed"}}, False),
        ({"all": [{"prefix": {"type": "arga."}}, {"exact": {"severity": "high"}}]}, True),
        ({"all": [{"prefix": {"type": "arga."}}, {"exact": {"severity": "low"}}]}, False),
        ({"all": []}, True),
        ({"any": [{"prefix": {"type": "argus."}}, {"suffix": {"type": "failed"}}]}, True),
        ({"any": [{"prefix": {"type": "argus."}}]}, False),
        ({"any": []}, False),
        ({"not": {"prefix": {"type": "argus."}}}, True),
        ({"not": {"any": [{"exact": {"subject": "r1"}}]}}, False),
    ],
)
def test_dialects(flt, expected):
    assert matches(f(**flt), ATTRS) is expected


def test_a_filter_needs_exactly_one_dialect():
    with pytest.raises(ValueError, match="exactly one"):
        f()
    with pytest.raises(ValueError, match="exactly one"):
        f(exact={"a": "b"}, prefix={"a": "b"})


def test_routes_select_sinks():
    routes = [
        RouteConfig(sinks=["kafka"], filters=[]),
        RouteConfig(
            name="failures",
            sinks=["slack", "kafka"],
            filters=[f(suffix={"type": ".failed"})],
            topic="failures",
        ),
        RouteConfig(sinks=["webhook"], filters=[f(prefix={"type": "argus."})]),
    ]
    router = Router(routes, ["kafka", "slack", "webhook"])
    assert router.sinks_for(EV) == {"kafka", "slack"}
    kafka_routes = router.routes_for("kafka", EV)
    assert [r.name for r in kafka_routes] == ["route0", "failures"]
    assert kafka_routes[1].topic == "failures"
    assert router.routes_for("webhook", EV) == []


def test_no_routes_means_every_sink_gets_everything():
    router = Router([], ["a", "b"])
    assert router.sinks_for(EV) == {"a", "b"}
