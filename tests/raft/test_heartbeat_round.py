"""A leader's heartbeat round: the commit index each follower gets is capped at its
match index, and caught-up followers share one message (encoded once per round)."""

from __future__ import annotations

from clusterfunk.raft import kv
from clusterfunk.raft.messages import Heartbeat


def _round(core):  # the heartbeats of one round, by destination
    core.on_tick(core.next_deadline())
    out = core.drain()
    assert out is not None
    return {s.dest.partition(":")[0]: s.msg for s in out.sends if type(s.msg) is Heartbeat}


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
