"""Raft paper 5.2 (leader election), with Pre-Vote (dissertation 9.6) and
CheckQuorum (dissertation 6.2)."""

from __future__ import annotations

import random

from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.kv import KVStore
from clusterfunk.raft.storage import MemoryStorage


def test_5_2_election_timeout_is_uniform_in_T_2T_from_the_injected_rng():
    cfg = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1)
    deadlines = []
    for seed in range(200):
        c = RaftCore("n1", MemoryStorage(), KVStore(), random.Random(seed), cfg,
                     {"n1": "n1:1", "n2": "n2:1"})
        c.start(10.0)
        deadlines.append(c.next_deadline() - 10.0)
    assert all(1.0 <= d < 2.0 for d in deadlines)
    assert max(deadlines) - min(deadlines) > 0.8  # spread, not constant
    again = RaftCore("n1", MemoryStorage(), KVStore(), random.Random(7), cfg,
                     {"n1": "n1:1", "n2": "n2:1"})
    again.start(10.0)
    assert again.next_deadline() - 10.0 == deadlines[7]  # determined by the RNG


def test_5_2_candidate_wins_with_majority_and_each_server_votes_once_per_term(make_net):
    net = make_net(["n1", "n2", "n3", "n4", "n5"])
    net.timeout("n1")
    net.timeout("n2")  # both pre-candidates; pre-votes do not change terms
    net.deliver_all()
    leaders = net.leaders()
    assert len(leaders) == 1
    term = net[leaders[0]].term
    votes = [c.vote for c in net.cores.values() if c.term == term]
    assert votes.count(leaders[0]) >= 3


def test_5_2_split_vote_resolves_in_a_later_term(make_net):
    cfg = RaftConfig(pre_vote=False, check_quorum=False)
    net = make_net(["n1", "n2", "n3", "n4"], config=cfg)
    # n1 and n2 become candidates in term 1 at once; n3 hears only n1, n4 only n2
    net.blocked |= {("n2", "n3"), ("n1", "n4")}
    net.timeout("n1")
    net.timeout("n2")
    net.deliver_all()
    assert net.leaders() == []
    assert net["n1"].role == net["n2"].role == "candidate"
    assert net["n1"].term == net["n2"].term == 1
    assert (net["n3"].vote, net["n4"].vote) == ("n1", "n2")
    net.heal()
    net.advance(6.0)
    assert len(net.leaders()) == 1 and net[net.leaders()[0]].term >= 2


def test_5_2_prevote_keeps_a_partitioned_server_from_inflating_terms(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.5)
    term = net["n1"].term
    net.isolate("n3")
    net.advance(10.0)  # n3 times out again and again, but only pre-votes
    assert net["n3"].term == term
    assert net["n3"].role == "precandidate"
    net.heal()
    net.advance(2.0)
    assert net.leaders() == ["n1"] and net["n1"].term == term  # no disruption
    assert net["n3"].role == "follower" and net["n3"].leader_id == "n1"


def test_5_2_without_prevote_a_rejoining_server_disrupts(make_net):
    cfg = RaftConfig(pre_vote=False, check_quorum=False)
    net = make_net(["n1", "n2", "n3"], config=cfg)
    net.elect("n1")
    term = net["n1"].term
    net.isolate("n3")
    net.advance(5.0)
    assert net["n3"].term > term + 1  # the contrast with the test above
    net.heal()
    net.advance(3.0)
    assert len(net.leaders()) == 1 and net[net.leaders()[0]].term > term


def test_5_2_check_quorum_partitioned_leader_steps_down(make_net):
    net = make_net(["n1", "n2", "n3", "n4", "n5"])
    net.elect("n1")
    net.advance(0.5)
    net.partition(["n1", "n2"], ["n3", "n4", "n5"])
    net.advance(3.0)
    assert net["n1"].role == "follower"  # lost contact with a quorum: stepped down
    majority_leaders = [s for s in net.leaders() if s in ("n3", "n4", "n5")]
    assert len(majority_leaders) == 1
    new = majority_leaders[0]
    net.heal()
    net.advance(2.0)
    assert net.leaders() == [new]
    assert all(c.leader_id == new for c in net.cores.values())


def test_5_2_followers_with_a_live_leader_ignore_vote_requests(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    term = net["n1"].term
    # n3 cannot hear the leader (one-way) and campaigns; the others still hear n1
    net.blocked.add(("n1", "n3"))
    net.advance(5.0)
    assert net["n1"].role == "leader" and net["n1"].term == term
    assert net["n2"].term == term
    assert net["n2"].dropped["vote request during leader lease"] >= 1
    assert net["n3"].term == term  # pre-votes were refused: no term inflation


def test_5_2_leader_of_one_node_cluster(make_net):
    net = make_net(["n1"])
    net.advance(2.5)
    assert net.leaders() == ["n1"]
    idx, term = net.propose("n1", b"\x92\xa3get\xa1a")
    assert net["n1"].commit_index == idx and net.applied("n1")[-1] == (idx, term, None)
