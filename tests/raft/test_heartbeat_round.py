"""A leader's heartbeat round: the commit index each follower gets is capped at its
match index, and caught-up followers share one message (encoded once per round)."""

from __future__ import annotations

import itertools

import attrs

from clusterfunk.raft import kv
from clusterfunk.raft.messages import Heartbeat


def _round(core):  # the heartbeats of one round, by destination
    seq = core._read_seq
    sends = []
    while core._read_seq == seq:  # tick (CheckQuorum too) until the next round went out
        core.on_tick(core.next_deadline())
        out = core.drain()
        sends += out.sends if out is not None else []
    return {s.dest.partition(":")[0]: s.msg for s in sends if type(s.msg) is Heartbeat}


def test_caught_up_followers_share_one_heartbeat_and_a_lagging_one_gets_its_own(make_net):
    net = make_net(["n1", "n2", "n3", "n4", "n5"])
    net.elect("n1")
    net.propose("n1", kv.encode_put("k", "v"))
    net.deliver_all()
    leader = net["n1"]
    commit = leader.commit_index
    hbs = _round(leader)
    assert sorted(hbs) == ["n2", "n3", "n4", "n5"]
    assert {hb.commit for hb in hbs.values()} == {commit}
    assert len({id(hb) for hb in hbs.values()}) == 1  # one object for the whole round

    # n5 falls behind: its heartbeat carries its own match index, the others share one
    net.isolate("n5")
    net.propose("n1", kv.encode_put("k", "w"))
    net.deliver_all()
    assert leader.commit_index > commit
    hbs = _round(leader)
    assert hbs["n5"].commit == leader.progress["n5"].match < leader.commit_index
    shared = {id(hbs[n]) for n in ("n2", "n3", "n4")}
    assert len(shared) == 1 and id(hbs["n5"]) not in shared
    assert all(hbs[n].commit == leader.commit_index for n in ("n2", "n3", "n4"))
    assert len({hb.ctx for hb in hbs.values()}) == 1  # one round number


def _net_round(net, leader="n1"):
    """One heartbeat round of the leader through the test network, delivered and
    answered: the heartbeats that arrived, by destination."""
    core = net[leader]
    seq, start = core._read_seq, len(net.delivered)
    while core._read_seq == seq:  # tick (CheckQuorum too) until the next round went out
        net.tick(leader, core.next_deadline())
    net.deliver_all()
    return {dest: msg for dest, _src, msg in net.delivered[start:] if type(msg) is Heartbeat}


def _with_nonvoter(make_net, **config):
    net = make_net(["n1", "n2", "n3"], config=attrs.evolve(make_net(["n1"]).config, **config))
    net.elect("n1")
    net.add("n4")  # empty storage, no bootstrap: waits as a non-voter
    net.call("n1", lambda c, now: c.add_nonvoter(now, "n4", "n4:8300"))
    net.deliver_all()
    for _ in range(2):  # the non-voter catches up and learns the commit index
        _net_round(net)
    leader = net["n1"]
    assert leader.progress["n4"].match == leader.log.last_index == leader.commit_index
    assert net["n4"].commit_index == leader.commit_index
    return net, leader


def test_an_idle_nonvoter_gets_every_nth_round_and_voters_every_round(make_net):
    net, leader = _with_nonvoter(make_net)
    every = leader.cfg.nonvoter_heartbeat_rounds
    assert every > 1
    got, echoes = [], [leader.progress["n4"].read_ack]
    for _ in range(3 * every):
        hbs = _net_round(net)
        assert {"n2", "n3"} <= set(hbs)  # voters: every round
        got.append("n4" in hbs)
        echoes.append(leader.progress["n4"].read_ack)
    assert sum(got) == 3  # the non-voter: one round in `every`
    gaps = [i for i, g in enumerate(got) if g]
    assert all(b - a == every for a, b in itertools.pairwise(gaps))
    # its echo (the cluster layer's unresponsive rule) advances at those rounds
    changed = [i for i in range(len(got)) if echoes[i + 1] > echoes[i]]
    assert changed == gaps
    assert net["n4"].leader_id == "n1"


def test_a_nonvoter_with_news_or_lagging_gets_the_next_round(make_net):
    net, leader = _with_nonvoter(make_net)
    every = leader.cfg.nonvoter_heartbeat_rounds
    while "n4" in _net_round(net):  # make it idle: it got a round, now it is skipped
        pass
    # a new commit index is news: the very next round carries it
    net.propose("n1", kv.encode_put("k", "v"))
    net.deliver_all()
    assert net["n4"].commit_index < leader.commit_index
    hbs = _net_round(net)
    assert hbs["n4"].commit == leader.commit_index == net["n4"].commit_index
    # a lagging non-voter (its log behind the leader's) gets every round
    net.isolate("n4")
    net.propose("n1", kv.encode_put("k", "w"))
    net.deliver_all()
    assert leader.progress["n4"].match < leader.log.last_index
    sent_before = len([m for d, _s, m in net.dropped_msgs if d == "n4" and type(m) is Heartbeat])
    for _ in range(every):
        _net_round(net)
    dropped = [m for d, _s, m in net.dropped_msgs if d == "n4" and type(m) is Heartbeat]
    assert len(dropped) - sent_before == every


def test_one_round_in_one_restores_every_round_for_nonvoters(make_net):
    net, _leader = _with_nonvoter(make_net, nonvoter_heartbeat_rounds=1)
    for _ in range(6):
        assert "n4" in _net_round(net)
