"""The delivery dedupe window, on literals."""

from __future__ import annotations

import pytest

from argbridge.cluster.dedupe import DedupeWindow, rebuild_start


def test_a_repeat_within_the_window_is_dropped_and_after_it_is_not():
    w: DedupeWindow[int] = DedupeWindow(60.0)
    assert w.check(0, "a", 100.0) is False
    assert w.check(0, "a", 159.0) is True
    assert w.check(0, "a", 160.0) is True  # the bound is inclusive
    assert w.check(0, "a", 160.5) is False  # past the window: delivered again
    assert w.check(0, "a", 161.0) is True  # and remembered from then


def test_partitions_are_separate_and_dropped_with_a_revoke():
    w: DedupeWindow[str] = DedupeWindow(60.0)
    assert not w.check("p0", "a", 1.0)
    assert not w.check("p1", "a", 1.0)
    assert w.size() == 2
    w.drop(["p0"])
    assert not w.holds("p0") and w.holds("p1")
    assert not w.check("p0", "a", 2.0)
    assert w.check("p1", "a", 2.0)


def test_old_ids_are_forgotten_behind_the_newest_timestamp():
    w: DedupeWindow[int] = DedupeWindow(10.0)
    for i in range(5):
        w.add(0, f"id{i}", float(i))
    assert w.size(0) == 5
    w.check(0, "late", 13.5)  # ids older than 3.5 go
    assert w.size(0) == 2  # id4 and late
    assert w.evicted == 0


def test_the_size_cap_evicts_the_oldest_and_counts_it():
    w: DedupeWindow[int] = DedupeWindow(3600.0, max_ids=3)
    for i in range(5):
        w.add(0, f"id{i}", float(i))
    assert w.size(0) == 3
    assert w.evicted == 2
    assert not w.check(0, "id0", 5.0)  # forgotten early: the cap is a bound, said so
    assert w.check(0, "id4", 5.0)


def test_add_keeps_the_first_sighting():
    w: DedupeWindow[int] = DedupeWindow(10.0)
    w.add(0, "a", 1.0)
    w.add(0, "a", 9.0)
    assert w.check(0, "a", 11.0) is True
    assert w.check(0, "a", 11.5) is False


def test_keep_makes_an_empty_window():
    w: DedupeWindow[int] = DedupeWindow(10.0)
    w.keep(3)
    assert w.holds(3) and w.size(3) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        DedupeWindow(0)
    with pytest.raises(ValueError, match="max_ids"):
        DedupeWindow(1, max_ids=0)


def test_rebuild_start_in_milliseconds():
    assert rebuild_start(10_000.5, 3600.0) == 6_400_500
    assert rebuild_start(10.0, 3600.0) == 0
