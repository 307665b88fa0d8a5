"""The event-size cap of the generic stream sources (screenshots arrive as base64).

Owns :func:`shrink`: when an upstream payload's JSON is larger than the cap, its
largest string fields (anywhere in the object) are replaced, largest first, by a
small marker ``{"omitted": true, "size": <bytes>, "sha256": <hex>}`` until the payload
fits (or no string field is left). The caller records the replaced paths in the
event's ``data.truncated``: the documented exception to the untouched
``data.upstream``. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

#: Fields smaller than this are never replaced (the marker itself is ~100 bytes).
MIN_FIELD = 256


@dataclass(frozen=True, slots=True)
class Replaced:
    """One replaced field: its path (``a.b[2].c``), size in bytes and SHA-256."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def _strings(value: Any, path: str, out: list[tuple[int, str, list[Any], Any]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(item, str):
                size = len(item.encode("utf-8", "surrogatepass"))
                if size >= MIN_FIELD:
                    out.append((size, sub, [value], key))
            else:
                _strings(item, sub, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if isinstance(item, str):
                size = len(item.encode("utf-8", "surrogatepass"))
                if size >= MIN_FIELD:
                    out.append((size, sub, [value], i))
            else:
                _strings(item, sub, out)


def shrink(payload: Any, size: int, cap: int) -> tuple[Any, list[Replaced]]:
    """``payload`` (whose JSON is ``size`` bytes) with its largest strings replaced
    until it is at most ``cap`` bytes; the input is not modified."""
    if size <= cap or not isinstance(payload, dict | list):
        return payload, []
    copy = _deep_copy(payload)
    found: list[tuple[int, str, list[Any], Any]] = []
    _strings(copy, "", found)
    found.sort(key=lambda f: f[0], reverse=True)
    replaced: list[Replaced] = []
    remaining = size
    for field_size, path, (container,), key in found:
        if remaining <= cap:
            break
        text: str = container[key]
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        container[key] = {"omitted": True, "size": field_size, "sha256": digest}
        replaced.append(Replaced(path, field_size, digest))
        remaining -= field_size - 100
    return copy, replaced


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
