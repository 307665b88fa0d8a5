"""Fixtures of the sink tests: a Tansu broker per test (it starts in ~0.1 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.tansu import Tansu, start_tansu, stop_tansu


@pytest.fixture
def tansu() -> Iterator[Tansu]:
    broker = start_tansu()
    try:
        yield broker
    finally:
        stop_tansu(broker)
