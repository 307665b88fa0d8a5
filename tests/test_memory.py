"""When memory is given back after a burst (argbridge.memory), on a manual clock."""

from __future__ import annotations

import platform

from argbridge.memory import TrimPolicy, give_back


def test_trims_once_after_a_burst_has_drained_and_settled():
    policy = TrimPolicy(burst_events=1000, quiet_events=100, settle=5.0, every=0.0)
    assert not policy.observe(50, 0.0)  # no burst yet: never
    assert not policy.observe(50, 100.0)
    assert not policy.observe(6000, 101.0)  # the burst
    assert not policy.observe(3000, 102.0)  # draining: keep the memory
    assert not policy.observe(80, 103.0)  # drained: wait until it settles
    assert not policy.observe(500, 104.0)  # not quiet again: start over
    assert not policy.observe(0, 105.0)
    assert not policy.observe(0, 109.9)
    assert policy.observe(0, 110.0)
    assert not policy.observe(0, 119.9)  # once per burst...
    assert not policy.observe(0, 120.0)


def test_trims_again_while_quiet_backing_off_to_every():
    policy = TrimPolicy(burst_events=1000, quiet_events=100, settle=5.0, every=60.0)
    assert not policy.observe(6000, 0.0)
    assert not policy.observe(0, 1.0)
    assert policy.observe(0, 6.0)  # settled after the burst
    assert not policy.observe(0, 15.9)
    assert policy.observe(0, 16.0)  # 2 x 5 s later
    assert not policy.observe(0, 35.9)
    assert policy.observe(0, 36.0)  # 20 s
    assert policy.observe(0, 76.0)  # 40 s
    assert not policy.observe(0, 135.9)
    assert policy.observe(0, 136.0)  # 60 s: the most
    assert policy.observe(0, 196.0)
    assert not policy.observe(500, 200.0)  # busy: never
    assert policy.observe(0, 256.0)


def test_a_steady_load_that_never_bursts_is_trimmed_every_interval():
    policy = TrimPolicy(burst_events=1000, quiet_events=100, settle=5.0, every=60.0)
    assert not policy.observe(50, 0.0)
    assert not policy.observe(50, 59.9)
    assert policy.observe(50, 60.0)
    assert not policy.observe(50, 119.9)
    assert policy.observe(50, 120.0)


def test_every_zero_trims_once_per_burst_only():
    policy = TrimPolicy(settle=5.0, every=0.0)
    assert not policy.observe(6000, 0.0)
    assert not policy.observe(0, 1.0)
    assert policy.observe(0, 6.0)
    assert not any(policy.observe(0, t) for t in (10.0, 100.0, 1000.0))


def test_give_back_trims_on_glibc():
    assert give_back() is (platform.libc_ver()[0] == "glibc")
