"""Statistics of the simulated network with fixed seeds."""

from __future__ import annotations

import itertools
import statistics

import pytest

from clusterfunk.demo.ping import Ping
from clusterfunk.sim.netmodel import LinkConfig
from tests.sim.helpers import Probe, recorder_sim, send


def blast(sim, drivers, count: int, src: str = "n1", dst: str = "n2", stream: bool = False) -> None:
    for i in range(count):
        sim.at(i * 0.001, send, drivers, src, dst, Probe(i, i * 0.001), stream)


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.1, 0.3])
def test_loss_rate_matches_configuration(loss: float) -> None:
    sim, drivers = recorder_sim(2, seed=11, link=LinkConfig(loss=loss))
    n = 20000
    blast(sim, drivers, n)
    sim.run_until(100)
    got = len(sim.app("n2").received)
    observed = 1 - got / n
    # binomial standard deviation, 4 sigma
    sigma = (loss * (1 - loss) / n) ** 0.5
    assert abs(observed - loss) <= 4 * sigma + 1e-9, (observed, loss)
    assert sim.stats["dropped_loss"] == n - got


def test_latency_distribution_is_base_plus_exponential_jitter() -> None:
    sim, drivers = recorder_sim(2, seed=5, link=LinkConfig(latency=0.010, jitter=0.002))
    n = 20000
    blast(sim, drivers, n)
    sim.run_until(100)
    delays = [now - msg.sent for now, _src, msg, _ in sim.app("n2").received]
    assert len(delays) == n
    assert min(delays) >= 0.010 - 1e-12
    extra = [d - 0.010 for d in delays]
    assert statistics.mean(extra) == pytest.approx(0.002, rel=0.05)
    # median of an exponential is ln 2 times its mean
    assert statistics.median(extra) == pytest.approx(0.002 * 0.6931, rel=0.06)


def test_duplication_delivers_some_datagrams_twice() -> None:
    sim, drivers = recorder_sim(2, seed=3, link=LinkConfig(duplicate=0.2))
    n = 10000
    blast(sim, drivers, n)
    sim.run_until(100)
    got = len(sim.app("n2").received)
    assert got - n == sim.stats["duplicated"]
    assert abs((got - n) / n - 0.2) < 0.02


def test_reordering_lets_later_datagrams_overtake() -> None:
    sim, drivers = recorder_sim(
        2, seed=3, link=LinkConfig(jitter=0.0, reorder=0.3, reorder_window=0.05)
    )
    blast(sim, drivers, 2000)
    sim.run_until(100)
    seqs = [m.seq for _, _, m, _ in sim.app("n2").received]
    assert sorted(seqs) == list(range(2000))
    inversions = sum(1 for a, b in itertools.pairwise(seqs) if a > b)
    assert inversions > 100


def test_without_faults_datagrams_keep_order_and_all_arrive() -> None:
    sim, drivers = recorder_sim(2, seed=3, link=LinkConfig(jitter=0.0))
    blast(sim, drivers, 500)
    sim.run_until(10)
    assert [m.seq for _, _, m, _ in sim.app("n2").received] == list(range(500))


def test_streams_are_reliable_and_ordered_despite_loss_and_jitter() -> None:
    cfg = LinkConfig(latency=0.001, jitter=0.005, loss=0.5, duplicate=0.5, reorder=0.5)
    sim, drivers = recorder_sim(2, seed=9, link=cfg)
    blast(sim, drivers, 3000, stream=True)
    sim.run_until(100)
    got = sim.app("n2").received
    assert [m.seq for _, _, m, _ in got] == list(range(3000))
    assert all(stream for *_, stream in got)


def test_per_link_override_only_affects_that_direction() -> None:
    sim, drivers = recorder_sim(3, seed=1)
    sim.set_link("n1", "n2", LinkConfig(loss=1.0))
    blast(sim, drivers, 100, "n1", "n2")
    blast(sim, drivers, 100, "n1", "n3")
    blast(sim, drivers, 100, "n2", "n1")
    sim.run_until(10)
    assert len(sim.app("n2").received) == 0
    assert len(sim.app("n3").received) == 100
    assert len(sim.app("n1").received) == 100


def test_oversize_datagrams_are_refused_and_counted() -> None:
    sim, drivers = recorder_sim(2, seed=1, datagram_budget=200)
    send(drivers, "n1", "n2", Probe(1, 0.0))
    drivers["n1"].call(lambda core, now: core.send("n2:1", Ping(1, 0.0, bytes(500))))
    sim.run_until(1)
    assert len(sim.app("n2").received) == 1
    assert drivers["n1"].stats.oversize == 1


def test_stream_reset_loses_a_suffix_of_frames_in_flight_then_reconnects() -> None:
    cfg = LinkConfig(latency=0.05, jitter=0.0, stream_reset=0.01)
    sim, drivers = recorder_sim(2, seed=4, link=cfg)
    blast(sim, drivers, 5000, stream=True)
    sim.run_until(100)
    seqs = [m.seq for _, _, m, _ in sim.app("n2").received]
    assert seqs == sorted(seqs)  # never reordered or duplicated
    lost = 5000 - len(seqs)
    assert sim.stats["dropped_reset"] == lost
    # a reset loses the frame and the ~50 behind it in flight (50 ms at 1 per ms)
    resets = sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)
    assert 20 < resets < 90
    assert lost > resets * 30


def test_partition_breaks_the_connection_for_frames_behind() -> None:
    sim, drivers = recorder_sim(2, seed=4, link=LinkConfig(latency=0.05, jitter=0.0))
    blast(sim, drivers, 100, stream=True)  # one frame per ms for 100 ms
    sim.at(0.0605, sim.partition, [["n1"], ["n2"]])
    sim.at(0.0615, sim.heal)
    sim.run_until(10)
    seqs = [m.seq for _, _, m, _ in sim.app("n2").received]
    # frames 0..10 arrived before the cut; 11 hit it and broke the connection, taking
    # the frames already in flight behind it; frames sent after that arrive again
    assert seqs[:11] == list(range(11))
    assert 11 not in seqs
    assert seqs[11:] == list(range(seqs[11], 100))
    assert seqs[11] >= 60
