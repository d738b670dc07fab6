"""Lifeguard and memberlist formulas as pure functions, and the small state holders."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.gossip import awareness as aw
from clusterfunk.gossip import suspicion as su
from clusterfunk.gossip.config import (
    LAN,
    LOCAL,
    WAN,
    profile,
    push_pull_scale,
    query_timeout,
    retransmit_limit,
)
from clusterfunk.gossip.lamport import LamportClock


def test_profiles_carry_memberlist_defaults():
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.suspicion_mult) == (1.0, 0.5, 4)
    assert (WAN.probe_interval, WAN.probe_timeout, WAN.suspicion_mult) == (5.0, 3.0, 6)
    assert (LOCAL.probe_interval, LOCAL.probe_timeout, LOCAL.suspicion_mult) == (1.0, 0.2, 3)
    assert (LAN.retransmit_mult, WAN.retransmit_mult, LOCAL.retransmit_mult) == (4, 4, 2)
    assert (LAN.gossip_interval, WAN.gossip_interval, LOCAL.gossip_interval) == (0.2, 0.5, 0.1)
    assert (LAN.gossip_nodes, WAN.gossip_nodes, LOCAL.gossip_nodes) == (3, 4, 3)
    assert (LAN.push_pull_interval, WAN.push_pull_interval, LOCAL.push_pull_interval) == (
        30.0,
        60.0,
        15.0,
    )
    assert (LAN.indirect_checks, WAN.indirect_checks, LOCAL.indirect_checks) == (3, 3, 1)
    assert (
        LAN.gossip_to_the_dead_time,
        WAN.gossip_to_the_dead_time,
        LOCAL.gossip_to_the_dead_time,
    ) == (30.0, 60.0, 15.0)
    for cfg in (LAN, WAN, LOCAL):
        assert cfg.suspicion_max_timeout_mult == 6
        assert cfg.awareness_max_multiplier == 8
        assert cfg.udp_buffer_size == 1400
    assert profile("LAN") is LAN and profile("local") is LOCAL
    with pytest.raises(ValueError):
        profile("moon")


@pytest.mark.parametrize(
    ("n", "expected"), [(1, 4), (5, 4), (9, 4), (10, 8), (50, 8), (99, 8), (100, 12), (1000, 16)]
)
def test_retransmit_limit(n, expected):
    assert retransmit_limit(4, n) == expected


def test_suspicion_min_timeout():
    assert su.suspicion_min_timeout(4, 1, 1.0) == 4.0  # log10 n floored at 1
    assert su.suspicion_min_timeout(4, 5, 1.0) == 4.0
    assert su.suspicion_min_timeout(4, 100, 1.0) == pytest.approx(8.0)
    assert su.suspicion_min_timeout(6, 1000, 5.0) == pytest.approx(90.0)
    assert su.suspicion_max_timeout(6, 4.0) == 24.0


def test_expected_confirmations():
    assert su.expected_confirmations(4, 50) == 2
    assert su.expected_confirmations(4, 4) == 2
    assert su.expected_confirmations(4, 3) == 0  # n - 2 < k: too small to confirm
    assert su.expected_confirmations(3, 3) == 1


def test_remaining_timeout_endpoints():
    assert su.remaining_timeout(0, 2, 4.0, 24.0) == 24.0
    assert su.remaining_timeout(2, 2, 4.0, 24.0) == pytest.approx(4.0)
    # c = 1 of k = 2: 24 - 20 * ln 2 / ln 3
    assert su.remaining_timeout(1, 2, 4.0, 24.0) == pytest.approx(
        24 - 20 * math.log(2) / math.log(3)
    )
    assert su.remaining_timeout(5, 2, 4.0, 24.0) == 4.0  # never below min
    assert su.remaining_timeout(0, 0, 4.0, 24.0) == 4.0  # nothing to wait for


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(0, 10),
    c=st.integers(0, 12),
    tmin=st.floats(0.01, 100.0),
    mult=st.integers(1, 10),
)
def test_remaining_timeout_is_bounded_and_monotone(k, c, tmin, mult):
    tmax = mult * tmin
    t = su.remaining_timeout(c, k, tmin, tmax)
    assert tmin - 1e-9 <= t <= tmax + 1e-9
    assert su.remaining_timeout(c + 1, k, tmin, tmax) <= t + 1e-9


def test_suspicion_counts_independent_confirmations_once():
    s = su.Suspicion(10.0, 3, "n2", k=2, min_timeout=4.0, max_timeout=24.0)
    assert s.deadline == 34.0
    assert not s.confirm("n2")  # the accuser does not confirm itself
    assert s.confirm("n3")
    assert not s.confirm("n3")
    first = s.deadline
    assert 14.0 < first < 34.0
    assert s.confirm("n4")
    assert s.deadline == pytest.approx(14.0)
    assert not s.confirm("n5")  # k reached: nothing more to gain


def test_awareness_clamps_and_scales():
    a = aw.Awareness(8)
    assert a.scale_timeout(0.5) == 0.5
    a.apply_delta(-3)
    assert a.score == 0
    a.apply_delta(3)
    assert a.scale_timeout(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7
    assert a.scale_timeout(1.0) == 8.0
    with pytest.raises(ValueError):
        aw.Awareness(0)


def test_probe_failure_delta():
    assert aw.probe_failure_delta(0, 0) == 1
    assert aw.probe_failure_delta(3, 0) == 3
    assert aw.probe_failure_delta(3, 2) == 1
    assert aw.probe_failure_delta(3, 3) == 0  # everyone nacked: the target is the problem


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-20, 20), max_size=40), st.integers(1, 12))
def test_awareness_score_stays_in_range(deltas, mult):
    a = aw.Awareness(mult)
    for d in deltas:
        a.apply_delta(d)
        assert 0 <= a.score <= mult - 1


def test_push_pull_scale_and_query_timeout():
    assert push_pull_scale(30.0, 32) == 30.0
    assert push_pull_scale(30.0, 33) == 60.0
    assert push_pull_scale(30.0, 1000) == 30.0 * (math.ceil(math.log2(1000) - 5) + 1)
    assert query_timeout(LAN, 5) == pytest.approx(0.2 * 16 * 1)
    assert query_timeout(LAN, 50) == pytest.approx(0.2 * 16 * 2)


def test_lamport_clock():
    c = LamportClock()
    assert c.increment() == 0
    assert c.increment() == 1
    c.witness(10)
    assert c.time == 11
    c.witness(3)
    assert c.time == 11
    assert c.increment() == 11
