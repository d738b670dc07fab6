"""Partitions block exactly what they should; crash, restart, pause, skew semantics."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from clusterfunk.sim.simulation import SimHost, Simulation
from clusterfunk.trace import Tracer
from tests.sim.helpers import Probe, Recorder, recorder_sim, send


def all_pairs(sim, drivers, t: float, stream: bool = False) -> None:
    for a, b in itertools.permutations(sim.names, 2):
        sim.at(t, send, drivers, a, b, Probe(0, t), stream)


def received_pairs(sim) -> set[tuple[str, str]]:
    out = set()
    for name in sim.names:
        app = sim.app(name)
        if app is None:
            continue
        for _now, src, _msg, _stream in app.received:
            out.add((src.partition(":")[0], name))
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_partition_blocks_exactly_cross_group_traffic(stream: bool) -> None:
    sim, drivers = recorder_sim(5, seed=1)
    sim.partition([["n1", "n2"], ["n3", "n4"]])  # n5 forms a third group
    all_pairs(sim, drivers, 0.1, stream)
    sim.run_until(1)
    group = {"n1": 0, "n2": 0, "n3": 1, "n4": 1, "n5": 2}
    expected = {(a, b) for a, b in itertools.permutations(sim.names, 2) if group[a] == group[b]}
    assert received_pairs(sim) == expected


def test_one_way_partition_blocks_one_direction_only() -> None:
    sim, drivers = recorder_sim(3, seed=1)
    sim.partition_oneway(["n1"], ["n2"])
    all_pairs(sim, drivers, 0.1)
    sim.run_until(1)
    got = received_pairs(sim)
    assert ("n1", "n2") not in got
    assert ("n2", "n1") in got
    assert len(got) == 5


def test_heal_restores_traffic_and_messages_in_flight_at_partition_are_dropped() -> None:
    sim, drivers = recorder_sim(2, seed=1)
    send(drivers, "n1", "n2", Probe(1, 0.0))  # in flight for ~1 ms
    sim.partition([["n1"], ["n2"]])
    sim.run_until(1)
    assert sim.app("n2").received == []
    sim.heal()
    sim.at(1.5, send, drivers, "n1", "n2", Probe(2, 1.5))
    sim.run_until(2)
    assert [m.seq for _, _, m, _ in sim.app("n2").received] == [2]


def test_partition_rejects_unknown_nodes_and_duplicates() -> None:
    sim, _ = recorder_sim(3, seed=1)
    with pytest.raises(ValueError):
        sim.partition([["n1"], ["n9"]])
    with pytest.raises(ValueError):
        sim.partition([["n1", "n2"], ["n2"]])


def test_crash_drops_volatile_state_keeps_disk_and_restart_rebuilds() -> None:
    boots: list[tuple[str, int, object]] = []

    def factory(host: SimHost) -> Recorder:
        core = Recorder()
        host.driver(core, 1)
        boots.append((host.name, host.incarnation, host.disk.read("durable")))
        if host.incarnation == 1:
            host.disk.write("durable", "synced")
            host.disk.sync()
            host.disk.write("volatile", "maybe")
        return core

    sim = Simulation(seed=4)
    sim.add_node("n1", factory)
    sim.add_node("n2", factory)
    sim.start()
    first = sim.app("n1")
    sim.crash("n1")
    assert not sim.alive("n1") and sim.app("n1") is None
    # messages to a crashed node are dropped, counted as "down"
    sim.hosts["n2"].drivers[0].call(lambda core, now: core.send("n1:1", Probe(1, now)))
    sim.run_until(1)
    assert sim.stats["dropped_down"] == 1
    sim.restart("n1")
    assert sim.app("n1") is not first
    assert ("n1", 2, "synced") in boots
    assert sim.hosts["n1"].disk.read("durable") == "synced"


def test_unsynced_writes_survive_only_as_a_prefix() -> None:
    outcomes = set()
    for seed in range(40):
        sim = Simulation(seed=seed)
        sim.add_node("n1", lambda host: None)
        sim.start()
        disk = sim.hosts["n1"].disk
        for i in range(5):
            disk.write(i, i)
        sim.crash("n1")
        kept = tuple(k for k in range(5) if disk.read(k) is not None)
        assert kept == tuple(range(len(kept)))  # a prefix
        outcomes.add(len(kept))
    assert len(outcomes) >= 4  # and the cut point really varies with the seed


def test_pause_holds_messages_and_timers_until_resume() -> None:
    sim, drivers = recorder_sim(2, seed=2)
    core = sim.app("n2")
    drivers["n2"].call(lambda c, now: setattr(c, "wake_at", now + 0.5))
    sim.pause("n2")
    sim.at(0.1, send, drivers, "n1", "n2", Probe(1, 0.1))
    sim.run_until(2.0)
    assert core.received == [] and core.ticks == []
    sim.resume("n2")
    sim.run_until(2.1)
    assert [round(t, 6) for t in core.ticks] == [2.0]
    assert [round(now, 6) for now, *_ in core.received] == [2.0]


def test_skew_and_drift_change_the_local_clock_only() -> None:
    sim, drivers = recorder_sim(2, seed=2)
    sim.run_until(10)
    sim.set_skew("n1", offset=5.0, drift=0.1)
    clock = sim.hosts["n1"].clock
    assert clock.now() == pytest.approx(10 * 1.1 + 5)
    assert sim.hosts["n2"].clock.now() == pytest.approx(10)
    # a timer 1.1 local seconds ahead fires 1 true second later
    drivers["n1"].call(lambda c, now: setattr(c, "wake_at", now + 1.1))
    sim.run_until(12)
    assert len(sim.app("n1").ticks) == 1
    assert sim.app("n1").ticks[0] == pytest.approx(10 * 1.1 + 5 + 1.1)


def test_fault_events_are_traced() -> None:
    tracer = Tracer(lambda: 0.0, keep=True)
    sim, _ = recorder_sim(3, seed=1, tracer=tracer)
    sim.at(1, sim.crash, "n1")
    sim.at(2, sim.restart, "n1")
    sim.at(3, sim.pause, "n2")
    sim.at(4, sim.resume, "n2")
    sim.at(5, sim.partition, [["n1"], ["n2", "n3"]])
    sim.at(6, sim.heal)
    sim.run_until(10)
    evs = [(r["t"], r["ev"], r.get("target"), r.get("groups")) for r in tracer.records]
    assert evs == [
        (0.0, "sim.start", None, None),
        (1.0, "sim.crash", "n1", None),
        (2.0, "sim.restart", "n1", None),
        (3.0, "sim.pause", "n2", None),
        (4.0, "sim.resume", "n2", None),
        (5.0, "sim.partition", None, [["n1"], ["n2", "n3"]]),
        (6.0, "sim.heal", None, None),
    ]
    assert tracer.records[0]["nodes"] == ["n1", "n2", "n3"] and tracer.records[0]["seed"] == 1


def test_net_events_only_with_verbosity() -> None:
    quiet = Tracer(lambda: 0.0, keep=True)
    sim, drivers = recorder_sim(2, seed=1, tracer=quiet)
    send(drivers, "n1", "n2", Probe(1, 0.0))
    sim.run_until(1)
    assert not [r for r in quiet.records if r["ev"].startswith("net.")]
    loud = Tracer(lambda: 0.0, keep=True, net=True)
    sim, drivers = recorder_sim(2, seed=1, tracer=loud)
    sim.partition([["n1"], ["n2"]])
    send(drivers, "n1", "n2", Probe(1, 0.0))
    sim.heal()
    send(drivers, "n1", "n2", Probe(2, 0.0))
    sim.run_until(1)
    evs = [r["ev"] for r in loud.records if r["ev"].startswith("net.")]
    assert evs == ["net.send", "net.drop", "net.send", "net.deliver"]


def test_malformed_datagrams_are_dropped_and_counted() -> None:
    sim, drivers = recorder_sim(2, seed=1)
    ep = sim.hosts["n1"].endpoints[1]
    for junk in (b"", b"\x00", b"\xc1", b"\x93\x01\x63\x00", bytes(range(256))):
        ep.send_datagram("n2:1", junk)
    sim.run_until(1)
    assert drivers["n2"].stats.malformed == 5
    assert sim.app("n2").received == []


def test_timers_are_not_fired_for_stopped_nodes() -> None:
    sim, drivers = recorder_sim(1, seed=1)
    core = sim.app("n1")
    drivers["n1"].call(lambda c, now: setattr(c, "wake_at", 1.0))
    sim.crash("n1")
    sim.run_until(5)
    assert core.ticks == []
    assert core.wake_at == 1.0  # never ticked


def test_skewed_timers_fire_at_or_after_their_local_deadline() -> None:
    sim, drivers = recorder_sim(1, seed=2)
    core = sim.app("n1")
    sim.set_skew("n1", offset=0.123456789, drift=0.0137)
    clock = sim.hosts["n1"].clock
    deadlines = []
    for i in range(2000):
        deadline = clock.now() + (i % 97) * 0.00005 + 1e-9
        deadlines.append(deadline)
        drivers["n1"].call(lambda c, now, d=deadline: setattr(c, "wake_at", d))
        sim.run_until(sim.now + 0.01)
    assert len(core.ticks) == 2000
    assert all(t >= d for t, d in zip(core.ticks, deadlines, strict=True))
    assert sim.stats["events"] < 2000 * 3  # no spin of spurious wake-ups


# -- disk faults (the nemesis' ``disk`` kind) ----------------------------------


def test_a_failed_fsync_makes_nothing_durable_and_is_reported() -> None:
    import random as _random

    from clusterfunk.runtime.api import DiskFailure
    from clusterfunk.sim.disk import SimDisk

    d = SimDisk()
    d.write("a", 1)
    d.sync()
    d.write("b", 2)
    d.fail_next_sync = True
    with pytest.raises(DiskFailure):
        d.sync()
    d.crash(_random.Random(0))
    assert d.read("a") == 1  # what was synced before stays
    assert d.unsynced == 0 and d.syncs == 1


def test_a_torn_last_write_is_discarded_on_replay() -> None:
    import random as _random

    from clusterfunk.sim.disk import SimDisk

    for seed in range(20):
        d = SimDisk()
        d.write("hs", "old")
        d.sync()
        d.write("e1", 1)
        d.write("hs", "new")
        rng = _random.Random(seed)
        keep = _random.Random(seed).randrange(3)  # the prefix the crash keeps
        d.tear_next_crash = True
        d.crash(rng)
        survivors = [("e1", 1), ("hs", "new")][: max(keep - 1, 0)]
        assert d.read("hs") == ("new" if ("hs", "new") in survivors else "old")
        assert d.read("e1") == (1 if survivors else None)
        assert d.torn_writes == (1 if keep else 0)


def test_a_corrupt_synced_record_makes_the_raft_store_refuse_to_start() -> None:
    import random as _random

    from clusterfunk.raft.errors import StorageCorrupt
    from clusterfunk.raft.messages import ENTRY_COMMAND, Entry
    from clusterfunk.raft.storage import HardState
    from clusterfunk.sim.disk import SimDisk
    from clusterfunk.sim.raft_storage import SimStorage

    d = SimDisk()
    s = SimStorage(d)
    s.save_hard_state(HardState(2, "n1", 1))
    s.append(1, [Entry(1, ENTRY_COMMAND, b"a"), Entry(2, ENTRY_COMMAND, b"b")])
    s.sync()
    key = d.corrupt(_random.Random(4), [("raft", "e", 2)])
    assert key == ("raft", "e", 2)
    with pytest.raises(StorageCorrupt, match=r"damaged record \('raft', 'e', 2\)"):
        SimStorage(d).recover()


def _disk_run(seed: int, kinds: tuple[str, ...]) -> tuple[Any, Any, Any, list[dict]]:
    import argparse

    from clusterfunk.sim.nemesis import Nemesis, NemesisConfig
    from clusterfunk.sim.workloads.raft import RaftWorkload

    tracer = Tracer(lambda: 0.0, keep=True)
    sim = Simulation(seed, tracer=tracer)
    wl = RaftWorkload(argparse.Namespace(
        nodes=5, duration=40.0, clients=3, keys=3, op_rate=20.0, read_index=0.5,
        election_timeout=1.0, op_timeout=3.0, check_every=0.5))
    wl.setup(sim)
    nem = Nemesis(sim, wl.fault_targets(sim), NemesisConfig(
        kinds=kinds, warmup=2.0, mean_gap=1.5, min_duration=0.5, max_duration=4.0))
    nem.start(until=35.0)
    sim.start()
    sim.run_until(40.0)
    summary = wl.finish(sim)
    return wl, nem, summary, list(tracer.records)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_disk_faults_keep_raft_safe(seed: int) -> None:
    _wl, nem, summary, records = _disk_run(seed, ("disk", "crash", "partition"))
    disk = [r for r in records if r["ev"] == "sim.disk"]
    assert disk, "the nemesis injected disk faults"
    assert all(set(r) == {"t", "node", "ev", "target", "kind"} for r in disk)
    assert {r["kind"] for r in disk} <= {"fsync_error", "torn_write", "corrupt"}
    assert summary["violations"] == [], summary["violations"]
    assert summary["linearizable"] is True
    # a node whose fsync failed never sent anything after the failure: it crashed
    # (fail-stop) before any later message of its own could leave
    for r in disk:
        if r["kind"] == "fsync_error":
            later = [x for x in records if x["t"] >= r["t"] and x.get("target") == r["target"]
                     and x["ev"] in ("sim.crash", "sim.restart")]
            assert later, r
    for _t, node, err in nem.refused:
        assert "damaged record" in err or "checksum" in err, err
        assert not any(x["ev"] == "sim.restart" and x["target"] == node
                       and x["t"] >= _t for x in records)


def test_power_cuts_mid_write_tear_records_and_lose_no_acknowledged_write() -> None:
    wl, nem, summary, _records = _disk_run(2, ("disk",))
    torn = sum(h.disk.torn_writes for h in wl.sim.hosts.values())
    assert torn > 0, "a torn_write fault cut the power during a batch"
    assert summary["violations"] == [] and summary["linearizable"] is True
    assert len(nem.refused) <= 2  # corrupt stores refused, a majority kept
