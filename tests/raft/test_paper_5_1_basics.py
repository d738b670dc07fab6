"""Raft paper 5.1: terms, roles, and the term rules every server follows."""

from __future__ import annotations

from clusterfunk.raft.messages import AppendEntries, AppendEntriesResponse, RequestVote


def test_5_1_servers_start_as_followers_and_one_becomes_leader(make_net):
    net = make_net(["n1", "n2", "n3"])
    assert all(c.role == "follower" and c.term == 0 for c in net.cores.values())
    net.advance(3.0)
    assert len(net.leaders()) == 1
    leader = net.leaders()[0]
    assert all(c.term == net[leader].term for c in net.cores.values())
    assert all(c.leader_id == leader for c in net.cores.values())


def test_5_1_higher_term_in_any_message_converts_to_follower(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    t = net["n1"].term
    # A response carrying a higher term deposes the leader.
    net["n1"].on_message(net.now, "n2:8300", AppendEntriesResponse(t + 5, "n2", False, 0), True)
    net._flush("n1")
    assert net["n1"].role == "follower" and net["n1"].term == t + 5 and net["n1"].vote is None
    assert ("n1", "raft.role", {"term": t + 5, "role": "follower"}) in net.trace


def test_5_1_stale_term_requests_are_rejected_with_the_current_term(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.deliver_all()
    t = net["n2"].term
    net["n2"].on_message(net.now, "n3:8300", AppendEntries.make(t - 1, "n3", 0, 0, (), 0), True)
    out = net["n2"].drain()
    (send,) = out.sends
    assert send.dest == "n3:8300"
    assert send.msg == AppendEntriesResponse(t, "n2", False, 0)
    assert net["n2"].dropped["stale term"] == 1
    assert net["n2"].leader_id == "n1"  # unaffected
    net["n2"].on_message(net.now, "n3:8300", RequestVote(t - 1, "n3", 99, 99), True)
    out = net["n2"].drain()
    assert out.sends[0].msg.granted is False and out.sends[0].msg.term == t


def test_5_1_term_and_vote_are_durable_before_the_vote_leaves(make_net):
    net = make_net(["n1", "n2", "n3"])
    st = net.storages["n2"]
    net.timeout("n1")  # pre-vote round
    net.deliver_all()
    # n1 won the pre-vote and requested real votes; n2 granted one in term 1
    assert st.hard_state.term == 1 and st.hard_state.vote == "n1"
    assert net["n1"].role == "leader"
