"""Pure parts of the ``poll`` source: pages, items, change tracking, rate-limit headers.

Owns: the query parameters of the n-th request of a listing (``page``/``size``,
``offset``/``limit`` or a cursor), pulling the items (and the next cursor) out of a
response with JMESPath, the fingerprint of a page (to see that a listing changed while
it was paged), the wait a rate-limit header asks for, and :class:`ChangeTracker`,
which remembers each item's last change marker so a re-poll emits only new or changed
items. No I/O.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath.exceptions
import jmespath.parser

from argbridge.compat.jmespath_eval import evaluate
from argbridge.config.streams import PaginationConfig
from argbridge.normalize.mapping import compile_expression, identity_text


class ListingError(ValueError):
    """A response that is not the listing we expect (a counted rejection)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One response: its items, the cursor of the next page (cursor style), and the
    fingerprint of its items' ids and markers."""

    items: list[Any]
    next_cursor: str | None
    fingerprint: str


class Pager:
    """Request parameters and response parsing of one listing."""

    def __init__(
        self, pagination: PaginationConfig, items: str, item_id: str, change_marker: str
    ) -> None:
        self.p = pagination
        self._items = compile_expression("items", items)
        self._next = compile_expression("pagination.next_cursor", pagination.next_cursor)
        self._id = compile_expression("item_id", item_id)
        self._marker = compile_expression("change_marker", change_marker)

    def params(self, index: int, cursor: str | None) -> dict[str, str]:
        """Query parameters of request ``index`` (0-based) of one scan."""
        p = self.p
        if p.style == "page":
            return {p.page_param: str(p.first_page + index), p.size_param: str(p.size)}
        if p.style == "offset":
            return {p.offset_param: str(index * p.size), p.limit_param: str(p.size)}
        if p.style == "cursor":
            out = {p.limit_param: str(p.size)}
            if cursor is not None:
                out[p.cursor_param] = cursor
            return out
        return {}

    def page(self, body: Any) -> Page:
        """Parse one response body; raises :class:`ListingError`."""
        items = _search(self._items, body)
        if not isinstance(items, list):
            raise ListingError("the response has no list of items where 'items' points")
        cursor: str | None = None
        if self.p.style == "cursor":
            value = _search(self._next, body)
            if value not in (None, ""):
                cursor = str(value)
        sha = hashlib.sha256()
        for item in items:
            sha.update(identity_text(self.identity(item)).encode())
            sha.update(b"\x1f")
        return Page(items, cursor, sha.hexdigest())

    def is_last(self, page: Page, index: int) -> bool:
        """Whether the scan ends after request ``index`` returned ``page``."""
        if index + 1 >= self.p.max_pages or self.p.style == "none":
            return True
        if self.p.style == "cursor":
            return page.next_cursor is None
        return len(page.items) < self.p.size

    def identity(self, item: Any) -> tuple[Any, Any]:
        """``(id, change marker)`` of ``item`` (``None`` where missing)."""
        return _search(self._id, item), _search(self._marker, item)


def _search(expr: jmespath.parser.ParsedResult, value: Any) -> Any:
    try:
        return evaluate(expr, value)
    except jmespath.exceptions.JMESPathError:
        return None


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait before the next request when the rate-limit headers say the
    budget is spent (``X-RateLimit-Remaining: 0`` or ``RateLimit-Remaining: 0`` with a
    reset in epoch seconds or a delta); ``None`` when there is budget left."""
    remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
    if remaining is None or remaining.strip() != "0":
        return None
    reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
    if reset is None:
        return 1.0
    try:
        value = float(reset.strip())
    except ValueError:
        return 1.0
    if value > 1e9:  # an epoch timestamp
        return max(0.0, value - now)
    return max(0.0, value)


class ChangeTracker:
    """The last change marker seen per item (bounded; the oldest are forgotten first:
    a forgotten item re-emits an event with the same deterministic id, which the
    journal drops as a duplicate)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, str] = OrderedDict()

    def changed(self, item_id: str, marker: str) -> bool:
        return self._seen.get(item_id) != marker

    def remember(self, item_id: str, marker: str) -> None:
        self._seen[item_id] = marker
        self._seen.move_to_end(item_id)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
