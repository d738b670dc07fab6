"""Vivaldi network coordinates: convergence on a synthetic latency matrix, and the
core learning coordinates from probe round trips."""

from __future__ import annotations

import math
import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.gossip import vivaldi as vv
from clusterfunk.gossip.messages import Coord
from clusterfunk.sim.netmodel import LinkConfig


def synthetic(n: int, seed: int) -> list[list[float]]:
    """RTTs (seconds) of nodes on a plane (up to 80 ms apart) with access links."""
    rng = random.Random(seed)
    pos = [(rng.uniform(0, 0.05), rng.uniform(0, 0.05)) for _ in range(n)]
    height = [rng.uniform(0.0005, 0.003) for _ in range(n)]
    return [
        [0.0 if i == j else math.dist(pos[i], pos[j]) + height[i] + height[j] for j in range(n)]
        for i in range(n)
    ]


def rel_errors(clients, rtt) -> list[float]:
    n = len(clients)
    return [
        abs(vv.distance(clients[i].coord, clients[j].coord) - rtt[i][j]) / rtt[i][j]
        for i in range(n)
        for j in range(i + 1, n)
    ]


def test_converges_on_a_synthetic_latency_matrix():
    n = 16
    rtt = synthetic(n, 1)
    rng = random.Random(2)
    clients = [vv.VivaldiClient(random.Random(i)) for i in range(n)]
    before = statistics.median(rel_errors(clients, rtt))
    for _ in range(200):
        for i in range(n):
            j = rng.randrange(n - 1)
            j = j if j < i else j + 1
            sample = rtt[i][j] * rng.uniform(0.95, 1.05)  # measurement noise
            clients[i].update(f"n{j}", clients[j].coord, sample)
    errs = rel_errors(clients, rtt)
    assert before > 0.9  # everyone starts at the origin
    assert statistics.median(errs) < 0.08
    assert max(c.coord.error for c in clients) < 0.5  # and knows it has converged
    for c in clients:
        assert len(c.coord.vec) == vv.DIMENSIONS and c.coord.height >= vv.HEIGHT_MIN


def test_bad_samples_and_coordinates_are_refused():
    c = vv.VivaldiClient(random.Random(0))
    good = vv.origin()
    assert c.update("x", good, -1.0) is None
    assert c.update("x", good, 1e9) is None
    assert c.update("x", Coord((0.0,) * 3, 1.0, 0.0, 0.0), 0.01) is None  # wrong dimension
    assert c.update("x", Coord((math.nan,) * 8, 1.0, 0.0, 0.0), 0.01) is None
    assert c.rejected == 4 and c.coord == vv.origin()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-1.0, 1.0), min_size=8, max_size=8),
            st.floats(0.0, 1.5),
            st.floats(0.0, 0.01),
            st.floats(0.0, 2.0),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_valid_sample_keeps_the_coordinate_finite(samples):
    c = vv.VivaldiClient(random.Random(0))
    for vec, err, height, rtt in samples:
        c.update("p", Coord(tuple(vec), err, 0.0, height), rtt)
        assert vv.is_valid(c.coord)
        assert 0.0 <= c.coord.error <= vv.ERROR_MAX


def test_core_learns_coordinates_from_probe_round_trips(cluster_factory):
    n = 6
    rtt = synthetic(n, 3)
    c = cluster_factory(n, seed=31, link=LinkConfig(latency=0.001, jitter=0.0))
    for i in range(n):
        for j in range(n):
            if i != j:
                c.sim.set_link(
                    f"n{i + 1}", f"n{j + 1}", LinkConfig(latency=rtt[i][j] / 2, jitter=0.0)
                )
    c.run(240.0)
    core = c.core("n1")
    errs = []
    for i in range(n):
        for j in range(i + 1, n):
            est = core.rtt_estimate(f"n{i + 1}", f"n{j + 1}")
            assert est is not None
            errs.append(abs(est - rtt[i][j]) / rtt[i][j])
    assert statistics.median(errs) < 0.1
    assert core.rtt_estimate("n1", "nobody") is None
