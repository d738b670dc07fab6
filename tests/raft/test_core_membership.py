"""Membership changes one server at a time (dissertation 4), non-voters, removal of
the leader, leadership transfer (dissertation 3.10)."""

from __future__ import annotations

import pytest

from clusterfunk.raft.errors import ConfigChangeInProgress, NotLeader, UnknownServer
from clusterfunk.raft.events import ConfigChanged


def config_of(net, sid):
    c = net[sid].configuration
    return sorted(c.voters), sorted(c.nonvoters)


def test_add_voter_to_a_running_cluster(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.propose("n1", b"before")
    net.deliver_all()
    net.add("n4")  # empty storage, no bootstrap: waits as a non-voter
    assert net["n4"].role == "nonvoter" and net["n4"].next_deadline() == float("inf")
    idx = net.call("n1", lambda c, now: c.add_voter(now, "n4", "n4:8300"))
    # in effect on the leader as soon as appended
    assert config_of(net, "n1") == (["n1", "n2", "n3", "n4"], [])
    net.deliver_all()
    net.advance(0.5)
    assert net["n1"].commit_index >= idx
    assert net["n4"].role == "follower" and config_of(net, "n4") == (["n1", "n2", "n3", "n4"], [])
    assert net.log_terms("n4") == net.log_terms("n1")
    assert any(isinstance(e, ConfigChanged) and e.index == idx for e in net.events["n4"])
    # the new voter counts: with n1 and n4 down, n2 + n3 are no longer a majority of 4
    net.crash("n1")
    net.crash("n4")
    net.advance(6.0)
    assert net.leaders() == []


def test_only_one_uncommitted_configuration_change(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    net.call("n1", lambda c, now: c.add_nonvoter(now, "n4", "n4:8300"))
    with pytest.raises(ConfigChangeInProgress):
        net.call("n1", lambda c, now: c.add_nonvoter(now, "n5", "n5:8300"))
    net.deliver_all()  # committed now
    net.call("n1", lambda c, now: c.add_nonvoter(now, "n5", "n5:8300"))
    with pytest.raises(NotLeader):
        net.call("n2", lambda c, now: c.add_voter(now, "n6", "n6:8300"))
    net.deliver_all()
    with pytest.raises(UnknownServer):
        net.call("n1", lambda c, now: c.remove_server(now, "n9"))


def test_new_leader_must_commit_its_noop_before_a_config_change(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.timeout("n1")
    while net["n1"].role != "leader":
        net.deliver_one()
    with pytest.raises(ConfigChangeInProgress):
        net.call("n1", lambda c, now: c.remove_server(now, "n3"))
    net.deliver_all()
    net.call("n1", lambda c, now: c.remove_server(now, "n3"))


def test_nonvoter_catches_up_without_voting_and_is_promoted(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    for i in range(30):
        net.propose("n1", b"x%d" % i)
    net.deliver_all()
    net.add("n4")
    net.call("n1", lambda c, now: c.add_nonvoter(now, "n4", "n4:8300"))
    net.advance(0.5)
    assert net["n4"].role == "nonvoter"
    assert net.log_terms("n4") == net.log_terms("n1")
    assert net["n4"].commit_index == net["n1"].commit_index
    # a non-voter does not count: n2 and n3 down -> no commits
    net.crash("n2")
    net.crash("n3")
    idx, _ = net.propose("n1", b"y")
    net.advance(0.3)
    assert net["n1"].commit_index < idx and net["n4"].last_index >= idx
    net.restart("n2")
    net.restart("n3")
    net.advance(0.5)
    net.call("n1", lambda c, now: c.add_voter(now, "n4", "n4:8300"))  # promotion
    net.advance(0.5)
    assert config_of(net, "n4") == (["n1", "n2", "n3", "n4"], [])
    assert net["n4"].role == "follower"
    # n4 now votes: it can even be elected
    net.crash("n1")
    net.advance(8.0)
    assert len(net.leaders()) == 1


def test_removing_the_leader_itself(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    idx = net.call("n1", lambda c, now: c.remove_server(now, "n1"))
    assert net["n1"].role == "leader"  # keeps managing the cluster until committed
    net.deliver_all()
    assert net["n1"].commit_index >= idx
    assert net["n1"].role == "nonvoter"  # stepped down after committing
    # ... and handed over with TimeoutNow: a new leader without waiting for a timeout
    assert len(net.leaders()) == 1 and net.leaders()[0] in ("n2", "n3")
    assert ("n1", "raft.role", {"term": net["n1"].term, "role": "nonvoter"}) in net.trace
    net.advance(5.0)
    (leader,) = net.leaders()
    assert leader in ("n2", "n3")
    assert config_of(net, leader) == (["n2", "n3"], [])
    net.propose(leader, b"after")
    net.advance(0.5)
    assert net[leader].commit_index == net[leader].last_index
    assert net["n1"].role == "nonvoter"  # the removed server never campaigns
    assert net["n1"].next_deadline() == float("inf")


def test_removed_server_cannot_disrupt(make_net):
    net = make_net(["n1", "n2", "n3", "n4"])
    net.elect("n1")
    net.advance(0.3)
    net.isolate("n4")  # n4 will not learn it was removed
    net.call("n1", lambda c, now: c.remove_server(now, "n4"))
    net.advance(0.5)
    term = net["n1"].term
    net.heal()
    net.advance(5.0)
    assert net.leaders() == ["n1"] and net["n1"].term == term
    assert net["n4"].role in ("precandidate", "follower")  # it tried to campaign
    assert sum(net[s].dropped.get("unknown server", 0)
               + net[s].dropped.get("vote request during leader lease", 0)
               for s in ("n1", "n2", "n3")) > 0


def test_leadership_transfer(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    net.isolate("n3")
    net.propose("n1", b"a")
    net.deliver_all()
    net.heal()
    target = net.call("n1", lambda c, now: c.transfer_leadership(now, "n3"))
    assert target == "n3"
    with pytest.raises(NotLeader):
        net.propose("n1", b"refused during the transfer")
    net.deliver_all()  # n3 is caught up first, then gets TimeoutNow
    assert net.leaders() == ["n3"]
    assert net["n3"].log.term_at(net["n1"].last_index) is not None
    net.advance(2.0)
    assert net.leaders() == ["n3"] and net["n1"].leader_id == "n3"


def test_leadership_transfer_default_target_and_timeout(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    net.isolate("n2")
    net.isolate("n3")
    net.call("n1", lambda c, now: c.transfer_leadership(now))
    with pytest.raises(NotLeader):
        net.propose("n1", b"x")
    net.now += 1.05
    net.tick("n1")  # the transfer is abandoned after an election timeout
    assert net["n1"]._transfer_target is None
    with pytest.raises(UnknownServer):
        net.call("n1", lambda c, now: c.transfer_leadership(now, "n1"))
