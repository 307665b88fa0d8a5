"""The generic event shape and its deterministic ids, on literals."""

from __future__ import annotations

from typing import Any

from argbridge.normalize.stream import EventSpec, item_event, stream_event, type_part


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
