"""The lease bounds a cluster node checks at start (coordinator.timing_errors;
docs/cluster.md, "Why no shard is served twice", cases 2 and 3)."""

from __future__ import annotations

import argparse

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from clusterfunk.cluster.coordinator import (
    DELAY_ALLOWANCE,
    CoordinatorConfig,
    fit_timing,
    lease_bounds,
    timing_errors,
)
from clusterfunk.node import Cluster
from clusterfunk.raft.config import RaftConfig
from clusterfunk.sim.workloads.cluster import ClusterWorkload


def _errors(coord: CoordinatorConfig, raft: RaftConfig) -> list[str]:
    return timing_errors(
        coord,
        heartbeat_period=raft.member_heartbeat_period,
        election_timeout=raft.election_timeout,
        max_clock_drift=raft.max_clock_drift,
    )


def test_the_defaults_fit_with_a_delay_allowance_of_a_third_of_a_second():
    coord, raft = CoordinatorConfig(), RaftConfig()
    assert _errors(coord, raft) == []
    assert raft.member_heartbeat_period == pytest.approx(0.5)
    slack = coord.unresponsive_after - 0.5 - coord.lease * (1 + raft.max_clock_drift)
    assert slack == pytest.approx(0.35) == DELAY_ALLOWANCE
    assert lease_bounds(coord.lease, heartbeat_period=0.5, election_timeout=1.0,
                        max_clock_drift=0.1) == pytest.approx((2.15, 2.5))


def test_a_non_voter_period_that_eats_the_allowance_is_refused():
    coord = CoordinatorConfig()
    (err,) = _errors(coord, RaftConfig(nonvoter_heartbeat_rounds=9))  # 0.9 s: slack -0.05
    assert "unresponsive_after" in err
    assert _errors(coord, RaftConfig(nonvoter_heartbeat_rounds=8)) == []  # slack 0.05
    # no unresponsive rule, or no lease: nothing to bound
    assert _errors(attrs.evolve(coord, unresponsive_after=0),
                   RaftConfig(nonvoter_heartbeat_rounds=9)) == []
    assert _errors(attrs.evolve(coord, lease=0),
                   RaftConfig(nonvoter_heartbeat_rounds=50, election_timeout=10)) == []


def test_a_takeover_wait_shorter_than_election_timeout_plus_lease_is_refused():
    coord = CoordinatorConfig()
    errs = _errors(coord, RaftConfig(election_timeout=2.0, heartbeat_interval=0.05))
    assert len(errs) == 1 and "takeover_wait" in errs[0]
    assert _errors(attrs.evolve(coord, takeover_wait=3.5),
                   RaftConfig(election_timeout=2.0, heartbeat_interval=0.05)) == []


@pytest.mark.parametrize("election", [0.3, 1.0, 2.0, 4.0])
def test_the_simulated_cluster_scales_its_bounds_with_the_election_timeout(election):
    wl = ClusterWorkload(argparse.Namespace(nodes=5, seed=1, election_timeout=election))
    assert _errors(wl.coord_config, wl.raft_config) == []
    if election <= 1.0:  # the defaults, unchanged
        assert wl.coord_config.unresponsive_after == CoordinatorConfig().unresponsive_after
        assert wl.coord_config.takeover_wait == CoordinatorConfig().takeover_wait


async def test_a_cluster_node_with_unsafe_timing_does_not_start(tmp_path):
    node = Cluster(
        "a", bind_host="127.0.0.1", seeds=[], shards=12, gossip_port=0, raft_port=0,
        coord_port=0, data_dir=tmp_path / "a",
        raft_config=RaftConfig(nonvoter_heartbeat_rounds=20),
    )
    with trio.fail_after(10), pytest.raises(ValueError, match="unsafe timing: unresponsive"):
        async with node:
            pass


@given(
    election=st.floats(0.05, 20.0),
    rounds=st.integers(1, 20),
    lease=st.floats(0.0, 10.0),
    drift=st.floats(0.0, 0.5),
    unresponsive=st.floats(0.0, 30.0),
    takeover=st.floats(0.0, 30.0),
)
def test_property_fit_timing_is_safe_and_never_lowers(election, rounds, lease, drift,
                                                       unresponsive, takeover):
    raft = RaftConfig(election_timeout=election, heartbeat_interval=election / 10,
                      nonvoter_heartbeat_rounds=rounds, max_clock_drift=drift)
    coord = CoordinatorConfig(lease=lease, unresponsive_after=unresponsive,
                              takeover_wait=takeover)
    fitted = fit_timing(coord, heartbeat_period=raft.member_heartbeat_period,
                        election_timeout=election, max_clock_drift=drift)
    assert fitted.unresponsive_after >= coord.unresponsive_after
    assert fitted.takeover_wait >= coord.takeover_wait
    assert _errors(fitted, raft) == []
    if not _errors(coord, raft) and fitted != coord:
        # raised only up to the floor plus the default margins
        floor_u, floor_t = lease_bounds(lease, heartbeat_period=raft.member_heartbeat_period,
                                        election_timeout=election, max_clock_drift=drift)
        assert fitted.unresponsive_after <= max(unresponsive, floor_u + DELAY_ALLOWANCE + 1e-6)
        assert fitted.takeover_wait <= max(takeover, floor_t + 0.5 + 1e-6)
