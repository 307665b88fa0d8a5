"""Pages, rate-limit headers and change tracking of the poll source, on literals."""

from __future__ import annotations

import pytest

from argbridge.config.streams import PaginationConfig
from argbridge.normalize.listing import ChangeTracker, ListingError, Pager, rate_limit_wait


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
