"""JMESPath mappings, the size cap and the generic event shape, on literals."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from argbridge.config.streams import PaginationConfig
from argbridge.normalize.listing import ChangeTracker, ListingError, Pager, rate_limit_wait
from argbridge.normalize.mapping import (
    CompiledMapping,
    MappingConfigError,
    MappingError,
    to_rfc3339,
)
from argbridge.normalize.oversize import shrink
from argbridge.normalize.stream import EventSpec, item_event, stream_event, type_part


def test_compile_errors_name_the_attribute():
    with pytest.raises(MappingConfigError, match=r"^subject: invalid JMESPath"):
        CompiledMapping.compile({"subject": "a.[b"})
    with pytest.raises(MappingConfigError, match=r"^data.x: invalid JMESPath"):
        CompiledMapping.compile({}, {"x": "foo("})
    with pytest.raises(MappingConfigError, match="not a mappable attribute"):
        CompiledMapping.compile({"source": "a"})


def test_apply_converts_and_checks_values():
    m = CompiledMapping.compile(
        {"subject": "run.id", "time": "at", "severity": "sev", "type": "kind"},
        {"passed": "counts.passed"},
    )
    out = m.apply(
        {"run": {"id": 42}, "at": 1_700_000_000_000, "sev": "HIGH", "kind": "x.y", "counts": {}}
    )
    assert out.subject == "42"
    assert out.time == "2023-11-14T22:13:20.000Z"
    assert out.severity == "high" and out.type == "x.y"
    assert out.data == {"passed": None}
    assert m.apply({}).subject is None
    for bad, attr in (
        ({"run": {"id": [1]}}, "subject"),
        ({"at": "soon"}, "time"),
        ({"sev": "urgent"}, "severity"),
        ({"kind": "has space"}, "type"),
        ({"run": {"id": True}}, "subject"),
    ):
        with pytest.raises(MappingError) as exc:
            m.apply(bad)
        assert exc.value.attribute == attr


def test_jmespath_function_errors_are_mapping_errors():
    m = CompiledMapping.compile({"subject": "join('-', items)"})
    with pytest.raises(MappingError, match="subject"):
        m.apply({"items": [1, 2]})


def test_to_rfc3339():
    assert to_rfc3339("2026-01-12T10:30:00Z") == "2026-01-12T10:30:00Z"
    assert to_rfc3339("2026-01-12 10:30:00+00:00") == "2026-01-12T10:30:00+00:00"
    assert to_rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_shrink_replaces_the_largest_fields_first_and_keeps_the_input():
    payload: dict[str, Any] = {"a": "x" * 5000, "b": {"c": ["y" * 20_000, "small"]}, "n": 1}
    size = len(str(payload))
    out, replaced = shrink(payload, size, 10_000)
    assert [r.path for r in replaced] == ["b.c[0]"]
    assert out["b"]["c"][0] == {
        "omitted": True,
        "size": 20_000,
        "sha256": hashlib.sha256(b"y" * 20_000).hexdigest(),
    }
    assert out["a"] == "x" * 5000 and payload["b"]["c"][0] == "y" * 20_000
    out, replaced = shrink(payload, size, 1000)
    assert [r.path for r in replaced] == ["b.c[0]", "a"]
    assert shrink(payload, 10, 1000) == (payload, [])


def test_stream_ids_are_deterministic_from_id_or_position_and_content():
    spec = EventSpec("s", "https://x/stream", "acme.e2e")
    common: dict[str, Any] = {"run": "r1", "event": "log", "now": "2026-01-01T00:00:00Z"}
    a, _ = stream_event(spec, {"m": 1}, position=0, content=b'{"m":1}', upstream_id=None, **common)
    b, _ = stream_event(spec, {"m": 1}, position=0, content=b'{"m":1}', upstream_id=None, **common)
    c, _ = stream_event(spec, {"m": 1}, position=1, content=b'{"m":1}', upstream_id=None, **common)
    d, _ = stream_event(spec, {"m": 1}, position=5, content=b'{"m":1}', upstream_id="7", **common)
    e, _ = stream_event(spec, {"m": 2}, position=9, content=b'{"m":2}', upstream_id="7", **common)
    assert a.id == b.id != c.id
    assert d.id == e.id  # the upstream id wins
    assert a.type == "acme.e2e.log" and a.subject == a.partitionkey == "r1"
    assert a.data == {"event": "log", "run": "r1", "upstream": {"m": 1}}


def test_item_ids_change_with_the_marker_only():
    spec = EventSpec("s", "https://x/items", "acme.build")
    kw: dict[str, Any] = {"size": 0, "now": "2026-01-01T00:00:00Z"}
    a, _ = item_event(spec, {"id": 1, "status": "a", "x": 1}, item_id=1, marker="a", **kw)
    b, _ = item_event(spec, {"id": 1, "status": "a", "x": 2}, item_id=1, marker="a", **kw)
    c, _ = item_event(spec, {"id": 1, "status": "b"}, item_id=1, marker="b", **kw)
    assert a.id == b.id != c.id
    assert a.subject == "1" and a.type == "acme.build"


def test_type_part():
    assert type_part("State Update") == "state_update"
    assert type_part("") == "message"


def test_pager_params_and_pages():
    pager = Pager(PaginationConfig(size=2), "data.items", "id", "[status, updated_at]")
    assert pager.params(0, None) == {"page": "1", "size": "2"}
    assert pager.params(2, None) == {"page": "3", "size": "2"}
    page = pager.page({"data": {"items": [{"id": 1, "status": "a"}, {"id": 2}]}})
    assert not pager.is_last(page, 0)
    assert pager.identity(page.items[0]) == (1, ["a", None])
    with pytest.raises(ListingError):
        pager.page({"data": {}})
    cursor = Pager(PaginationConfig(style="cursor", size=5), "@", "id", "status")
    assert cursor.params(0, None) == {"limit": "5"}
    assert cursor.params(1, "abc") == {"limit": "5", "cursor": "abc"}
    offset = Pager(PaginationConfig(style="offset", size=5), "items", "id", "status")
    assert offset.params(3, None) == {"offset": "15", "limit": "5"}


def test_rate_limit_wait():
    assert rate_limit_wait({"x-ratelimit-remaining": "3"}, 0) is None
    assert rate_limit_wait({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "7"}, 0) == 7
    reset = {"ratelimit-remaining": "0", "ratelimit-reset": "1700000060"}
    assert rate_limit_wait(reset, 1_700_000_000) == 60
    assert rate_limit_wait({"x-ratelimit-remaining": "0"}, 0) == 1.0


def test_change_tracker_is_bounded():
    t = ChangeTracker(limit=2)
    t.remember("a", "1")
    t.remember("b", "1")
    t.remember("c", "1")
    assert len(t) == 2 and t.changed("a", "1") and not t.changed("c", "1")
