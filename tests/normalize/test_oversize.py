"""The event-size cap on literals."""

from __future__ import annotations

import hashlib
from typing import Any

from argbridge.normalize.oversize import shrink


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
