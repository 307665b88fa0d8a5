"""When memory is given back after a burst (argbridge.memory), on a manual clock."""

from __future__ import annotations

import platform

from argbridge.memory import TrimPolicy, give_back


def test_trims_once_after_a_burst_has_drained_and_settled():
    policy = TrimPolicy(burst_events=1000, quiet_events=100, settle=5.0)
    assert not policy.observe(50, 0.0)  # no burst yet: never
    assert not policy.observe(50, 100.0)
    assert not policy.observe(6000, 101.0)  # the burst
    assert not policy.observe(3000, 102.0)  # draining: keep the memory
    assert not policy.observe(80, 103.0)  # drained: wait until it settles
    assert not policy.observe(500, 104.0)  # not quiet again: start over
    assert not policy.observe(0, 105.0)
    assert not policy.observe(0, 109.9)
    assert policy.observe(0, 110.0)
    assert not policy.observe(0, 120.0)  # once per burst


def test_give_back_trims_on_glibc():
    assert give_back() is (platform.libc_ver()[0] == "glibc")
