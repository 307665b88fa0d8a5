"""``--since`` values: an RFC 3339 / ISO 8601 time, Unix seconds, or a duration ago.

Pure: the caller passes ``now``. ``"2h"`` means two hours before ``now``;
``"2026-01-02T03:04:05Z"`` and ``"1767323045"`` are absolute.
"""

from __future__ import annotations

from datetime import UTC, datetime

from argbridge.config.base import parse_duration


def parse_since(value: str | float | int, now: float) -> float:
    """Unix seconds for ``value``; raises ``ValueError`` with a usable message."""
    if isinstance(value, bool):
        raise ValueError("since must be a time, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read {value!r} as a time: use RFC 3339 (2026-01-02T03:04:05Z), "
            "Unix seconds, or a duration ago (30m, 2h, 1d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
