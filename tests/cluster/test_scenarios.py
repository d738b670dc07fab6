"""Scripted cluster scenarios in the simulator (5 nodes, 1,000 shards)."""

from __future__ import annotations

from clusterfunk.cluster.coordinator import OPERATIONAL
from clusterfunk.sharding import ShardMap, diff
from tests.cluster.helpers import committed, leader, make


def _map(sim, name):
    app = sim.app(name)
    return ShardMap.decode(app.coord.committed.blob)


def _agreed(sim, wl):
    """Every live node is operational with one committed map; returns that map."""
    live = [n for n in wl.names if sim.alive(n)]
    digests = {sim.app(n).coord.committed.digest for n in live}
    assert len(digests) == 1, digests
    for n in live:
        assert sim.app(n).coord.state == OPERATIONAL, (n, sim.app(n).coord.state)
    return _map(sim, live[0])


def _finish_ok(sim, wl):
    s = wl.finish(sim)
    assert s["violations"] == []
    return s


def test_start_commits_one_map_with_all_nodes():
    sim, wl = make(seed=3, settle=10.0)
    sim.run_until(15.0)
    maps = committed(sim)
    assert len(maps) == 1
    assert maps[0]["nodes"] == ["n1", "n2", "n3", "n4", "n5"]
    m = _agreed(sim, wl)
    assert sorted(m.counts().values()) == [200] * 5
    lead = leader(sim, wl)
    cfg = sim.app(lead).raft.configuration
    assert len(cfg.voters) == 3 and len(cfg.nonvoters) == 2
    # every node acked the proposal before the commit, and the leader counted them
    acks = [r for r in sim.tracer.of("cluster.ack") if r["index"] == maps[0]["index"]]
    assert sorted(r["from"] for r in acks) == wl.names
    assert sim.app("n1").coord.created is not None
    s = _finish_ok(sim, wl)
    assert s["settled_check"] == "applied" and s["reshards"] == 1
    assert s["changes"][0]["kind"] == "start" and s["changes"][0]["seconds"] < 5.0


def _non_leader(sim, wl, exclude=()):
    lead = leader(sim, wl)
    return next(n for n in reversed(wl.names) if n != lead and n not in exclude)


def test_crashed_follower_leaves_the_map_and_only_its_shards_move():
    sim, wl = make(seed=5, settle=10.0)
    sim.run_until(10.0)
    victim = _non_leader(sim, wl)
    before = _map(sim, leader(sim, wl))
    sim.crash(victim)
    sim.run_until(40.0)
    after = _agreed(sim, wl)
    assert victim not in after.nodes
    assert sorted(after.nodes) == sorted(n for n in wl.names if n != victim)
    changes = diff(before, after)
    lost = set(changes[victim][1])
    assert lost == set(before.shards_of(victim))
    gained = set().union(*(set(g) for n, (g, _l) in changes.items() if n != victim))
    assert gained == lost  # nothing but the victim's shards moved
    for n, (_g, lo) in changes.items():
        if n != victim:
            assert lo == ()
    s = _finish_ok(sim, wl)
    assert s["settled_check"] == "applied"
    crash = [c for c in s["changes"] if c["kind"] == "crash"]
    assert crash and crash[0]["moved"] == len(lost)
    # left out once its heartbeat echoes stalled (2 s), before gossip declared it dead
    assert crash[0]["seconds"] < 4.0
    dead = [r for r in sim.tracer.of("gossip.member")
            if r["member"] == victim and r["status"] == "dead"]
    assert dead and dead[0]["t"] > 10.0 + crash[0]["seconds"]


def test_restarted_node_rejoins_and_takes_shards():
    sim, wl = make(seed=7, settle=10.0)
    sim.run_until(10.0)
    victim = _non_leader(sim, wl)
    sim.crash(victim)
    sim.run_until(30.0)
    without = _agreed(sim, wl)
    assert victim not in without.nodes
    sim.restart(victim)
    sim.run_until(50.0)
    back = _agreed(sim, wl)
    assert victim in back.nodes
    assert len(back.shards_of(victim)) == 200
    changes = diff(without, back)
    for n, (gained, _lost) in changes.items():
        if n != victim:
            assert gained == ()  # only the newcomer gains
    s = _finish_ok(sim, wl)
    assert [c["kind"] for c in s["changes"]] == ["start", "crash", "restart"]


def test_leader_crash_new_leader_reshards_without_it():
    sim, wl = make(seed=11, settle=10.0)
    sim.run_until(10.0)
    old = leader(sim, wl)
    before = _map(sim, old)
    sim.crash(old)
    sim.run_until(40.0)
    new = leader(sim, wl)
    assert new is not None and new != old
    after = _agreed(sim, wl)
    assert old not in after.nodes and len(after.nodes) == 4
    changes = diff(before, after)
    assert set(changes[old][1]) == set(before.shards_of(old))
    for n, (_g, lo) in changes.items():
        if n != old:
            assert lo == ()
    # the new leader proposed the map in its own term
    last = committed(sim)[-1]
    assert sim.app(new).coord.committed.leader == new
    assert last["nodes"] == list(after.nodes)
    s = _finish_ok(sim, wl)
    crash = next(c for c in s["changes"] if c["kind"] == "crash")
    # detected by the Raft election + ack timeout, well before gossip declares it dead
    assert crash["seconds"] < 5.0
    # once gossip declared it dead it left Raft, and a non-voter was promoted in its place
    cfg = sim.app(new).raft.configuration
    assert old not in cfg.members()
    assert len(cfg.voters) == 3 and len(cfg.nonvoters) == 1


def test_node_that_never_acks_is_dropped_from_the_proposal():
    sim, wl = make(seed=13, settle=10.0)
    sim.run_until(10.0)
    mute = _non_leader(sim, wl)
    app = sim.app(mute)
    ep = app.coord_driver.transport
    real_send = ep.send_frame
    ep.send_frame = lambda dest, data: None  # its coordination port sends nothing
    lead = leader(sim, wl)
    n_before = len(committed(sim))
    # a membership change forces a round: crash another follower
    other = _non_leader(sim, wl, exclude=(mute,))
    sim.crash(other)
    sim.run_until(30.0)
    maps = committed(sim)[n_before:]
    assert maps, "no map was committed"
    final = maps[-1]
    assert mute not in final["nodes"] and other not in final["nodes"]
    proposals = {r["index"]: r for r in sim.tracer.of("cluster.shardmap")
                 if r["phase"] == "proposed" and r["node"] == lead}
    # a proposal with the mute node was made, timed out and was never committed
    with_mute = [i for i, r in proposals.items() if mute in r["nodes"] and i > 9]
    assert with_mute
    assert all(i not in {m["index"] for m in maps} for i in with_mute)
    assert mute in sim.app(lead).coord.quarantined
    # still a Raft member: only the map left it out
    assert mute in sim.app(lead).raft.configuration.members()
    assert sim.app(mute).coord.state != OPERATIONAL
    # once it can talk again it is let back in (after the quarantine time)
    ep.send_frame = real_send
    sim.run_until(60.0)
    m = _agreed(sim, wl)
    assert mute in m.nodes
    _finish_ok(sim, wl)


def test_isolated_leader_is_replaced_and_rejoins_after_the_heal():
    sim, wl = make(seed=17, settle=10.0)
    sim.run_until(10.0)
    old = leader(sim, wl)
    sim.partition([[old]])
    sim.run_until(30.0)
    new = leader(sim, wl)
    assert new is not None and new != old
    m = _map(sim, new)
    assert old not in m.nodes and len(m.nodes) == 4
    # the isolated node never used a map without itself committed by the majority...
    assert sim.app(old).coord.committed.index < sim.app(new).coord.committed.index
    # ... and it is not operational: it lost its leadership (check-quorum)
    assert sim.app(old).raft.role != "leader"
    sim.heal()
    sim.run_until(110.0)  # gossip's reconnect merges the sides within about a minute
    back = _agreed(sim, wl)
    assert sorted(back.nodes) == wl.names
    _finish_ok(sim, wl)


def test_leader_does_not_depend_on_gossip_events():
    """The reconciler reads the full member list on a timer too: a leader that misses
    every gossip event still removes a crashed node and re-adds it after its restart."""
    sim, wl = make(seed=19, settle=10.0)
    sim.run_until(10.0)
    lead = leader(sim, wl)
    sim.app(lead).gossip_driver._subscribers.clear()  # the glue hears no gossip event
    victim = _non_leader(sim, wl)
    sim.crash(victim)
    sim.run_until(30.0)
    assert victim not in _agreed(sim, wl).nodes
    assert victim not in sim.app(lead).raft.configuration.members()
    sim.restart(victim)
    sim.run_until(50.0)
    assert victim in _agreed(sim, wl).nodes
    assert leader(sim, wl) == lead
    _finish_ok(sim, wl)


def test_leader_that_hears_no_ack_hands_leadership_over():
    sim, wl = make(seed=23, settle=10.0)
    sim.run_until(10.0)
    old = leader(sim, wl)
    drv = sim.app(old).coord_driver
    drv.on_frame_from = lambda src, identity, data: None  # its coordination port hears nothing
    victim = _non_leader(sim, wl)
    sim.crash(victim)  # forces a round
    sim.run_until(40.0)
    assert sim.app(old).coord.stats.get("nobody acked", 0) >= 1
    new = leader(sim, wl)
    assert new is not None and new != old
    m = _agreed(sim, wl)
    assert victim not in m.nodes and old in m.nodes
    assert sim.app(new).coord.committed.leader == new
    _finish_ok(sim, wl)


def test_weighted_shards_stay_balanced_by_weight():
    sim, wl = make(seed=29, shards=600, settle=10.0, shard_weights="random")
    assert isinstance(wl.weights, list) and len(set(wl.weights)) > 1
    sim.run_until(10.0)
    victim = _non_leader(sim, wl)
    sim.crash(victim)
    sim.run_until(30.0)
    m = _agreed(sim, wl)
    loads = m.loads()
    assert victim not in loads and len(loads) == 4
    assert max(loads.values()) - min(loads.values()) <= m.max_weight
    assert m.weights.total == sum(wl.weights)
    _finish_ok(sim, wl)  # the map checker validated every committed map's balance too


def test_gossip_only_clients_are_nonmembers_outside_the_map():
    sim, wl = make(seed=31, nodes=6, settle=10.0, nonmembers=2)
    assert wl.members == ["n1", "n2", "n3", "n4"]
    sim.run_until(10.0)
    lead = leader(sim, wl)
    assert sorted(sim.app(lead).raft.configuration.members()) == wl.members
    m = _map(sim, lead)
    assert list(m.nodes) == wl.members
    for n in ("n5", "n6"):
        c = sim.app(n).coord
        assert (c.state, c.role) == (OPERATIONAL, "nonmember")
        # a client still discovers the members' endpoints through gossip
        assert sim.app(n).gossip.member("n1").tags["ep.raft"] == "n1:8300"
    sim.crash("n6")  # a client crash changes no map
    sim.run_until(30.0)
    assert len(committed(sim)) == 1
    s = _finish_ok(sim, wl)
    assert s["settled_check"] == "applied"


def test_stranded_proposal_is_superseded_when_a_node_is_unreachable_one_way():
    """Stranded-proposal rule: a rejoining node the leader cannot reach (one-way
    partition) never acks the proposal that adds it; the other nodes released the
    shards it would gain when they applied that proposal. The leader supersedes it
    with a map of the committed nodes, so every shard is served again long before
    the partition heals (the old rule left a quarter of the shards unserved)."""
    sim, wl = make(seed=7, nodes=4, shards=60, settle=10.0, duration=80.0)
    sim.run_until(6.0)
    lead = leader(sim, wl)
    assert lead is not None and lead != "n4"
    sim.crash("n4")
    sim.run_until(16.0)
    sim.partition_oneway([lead], ["n4"])
    sim.restart("n4")
    sim.run_until(24.0)
    c = sim.app(lead).coord
    with_n4 = [r["index"] for r in sim.tracer.of("cluster.shardmap")
               if r["phase"] == "proposed" and r["node"] == lead and "n4" in r["nodes"]
               and r["t"] > 16.0]
    assert with_n4, "the leader never proposed a map with the rejoined node"
    assert c.pending is None and c.committed.index > max(with_n4)
    assert c.committed.nodes == ("n1", "n2", "n3")
    served: set[int] = set()
    for n in ("n1", "n2", "n3"):
        mine = sim.app(n).coord.owned
        assert not served & mine
        served |= mine
    assert served == set(range(60))
    sim.heal()
    sim.run_until(80.0)
    assert "n4" in _agreed(sim, wl).nodes
    _finish_ok(sim, wl)
