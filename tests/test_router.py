"""CloudEvents subscription filter dialects and routing."""

from __future__ import annotations

import pytest

from argbridge.config.settings import FilterConfig, RouteConfig
from argbridge.events import CloudEvent
from argbridge.journal.records import encode_event
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


# -- argbridge's own events: the [ops] routes ---------------------------------------------

OPS_EV = CloudEvent(id="2", source="urn:argbridge:source:arga", type="argbridge.source.auth_failed")


def _ops_settings(**kw):
    from argbridge.config.settings import load_settings

    sinks = {
        "kafka": {"type": "kafka"},
        "slack": {"type": "slack", "webhook_url": "https://hooks.slack.test/x"},
        "file": {"type": "file"},
    }
    return load_settings(None, sinks=sinks, http={"enabled": False}, **kw)


def test_ops_events_skip_the_data_routes_and_go_to_kafka_and_slack_by_default():
    router = Router.from_settings(_ops_settings())
    # No routes: the default route sends data everywhere, but not argbridge's own events.
    assert router.sinks_for(EV) == {"kafka", "slack", "file"}
    assert router.sinks_for(OPS_EV) == {"kafka", "slack"}
    [kafka] = router.routes_for("kafka", OPS_EV)
    assert kafka.topic == "argbridge.ops"
    [slack] = router.routes_for("slack", OPS_EV)
    assert slack.topic is None  # Slack keeps its channel
    assert router.routes_for("file", OPS_EV) == []


def test_ops_destination_is_configurable_and_a_route_may_opt_in():
    s = _ops_settings(
        ops={"sinks": ["file"], "topic": "ops.{type}"},
        routes=[
            {"name": "data", "sinks": ["kafka"]},
            {"name": "alerts", "sinks": ["slack"], "ops": True},
        ],
    )
    router = Router.from_settings(s)
    assert router.sinks_for(OPS_EV) == {"file", "slack"}
    assert router.sinks_for(EV) == {"kafka", "slack"}  # ops = true: as well as data
    assert router.routes_for("kafka", OPS_EV) == []
    none = Router.from_settings(_ops_settings(ops={"sinks": []}))
    assert none.sinks_for(OPS_EV) == set()


def test_ops_type_follows_the_type_prefix():
    router = Router.from_settings(_ops_settings(type_prefix="acme."))
    prefixed = CloudEvent(id="3", source="urn:x", type="acme.argbridge.source.auth_failed")
    assert router.sinks_for(prefixed) == {"kafka", "slack"}
    assert router.body_is_ops(prefixed.to_json())
    assert not router.body_is_ops(EV.to_json())
    # Only the type attribute counts, not a mention in the data or the source.
    decoy = CloudEvent(
        id='x","type":"acme.argbridge.',
        source='urn:"type":"acme.argbridge.x',
        type="arga.validation.run.failed",
        data={"type": "acme.argbridge.source.auth_failed"},
    )
    assert not router.body_is_ops(decoy.to_json())
    assert router.body_is_ops(b"not a stored body")  # unknown shape: decode it
    # The sink worker asks on the stored attributes JSON (the body without data).
    for event in (prefixed, EV, decoy):
        attrs = encode_event(event)[0]
        assert router.body_is_ops(attrs) == router.body_is_ops(event.to_json())


def test_ops_sinks_must_exist():
    from argbridge.config.settings import load_settings
    from argbridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings(None, sinks={"f": {"type": "file"}}, ops={"sinks": ["nope"]})
    assert ("ops.sinks.0", "no sink named 'nope' (f)") in info.value.problems
