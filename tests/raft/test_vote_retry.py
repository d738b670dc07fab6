"""Raft 5.1 retry for elections: "servers retry RPCs if they do not receive a response
in a timely manner". A candidate (and a pre-candidate) resends its request every
heartbeat interval to the voters that have not answered, while its election runs."""

from __future__ import annotations

from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.messages import RequestVote

NO_PREVOTE = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1, pre_vote=False)


def _vote_requests(net, src: str) -> list[tuple[str, RequestVote]]:
    return [(dest, msg) for dest, s, msg in net.queue
            if s.partition(":")[0] == src and isinstance(msg, RequestVote)]


def test_a_lost_request_vote_is_resent_after_one_heartbeat_interval(make_net):
    net = make_net(["n1", "n2", "n3"], config=NO_PREVOTE)
    net.blocked |= {("n1", "n2"), ("n1", "n3")}
    net.timeout("n1")
    t0 = net.now
    assert net["n1"].role == "candidate" and net["n1"].term == 1
    net.deliver_all()  # both RequestVotes are lost
    assert net["n2"].term == net["n3"].term == 0
    assert net["n1"].next_deadline() == t0 + 0.1  # the retry, well before the timeout
    net.heal()
    net.tick("n1", t0 + 0.05)
    assert _vote_requests(net, "n1") == []  # not yet
    net.tick("n1", t0 + 0.1)
    sent = _vote_requests(net, "n1")
    assert sorted(d for d, _ in sent) == ["n2", "n3"]
    assert {(m.term, m.pre_vote) for _, m in sent} == {(1, False)}
    net.deliver_all()
    assert net.leaders() == ["n1"] and net["n1"].term == 1  # won in the same term
    assert net["n2"].vote == net["n3"].vote == "n1"


def test_no_retry_to_a_voter_that_answered(make_net):
    net = make_net(["n1", "n2", "n3", "n4", "n5"], config=NO_PREVOTE)
    # n5 is a candidate of term 1 first and gets n3's vote
    net.blocked |= {("n5", "n1"), ("n5", "n2"), ("n5", "n4")}
    net.timeout("n5")
    net.deliver_all()
    assert net["n3"].vote == "n5" and net["n5"].role == "candidate"
    # n1 (term 0 -> 1): n2 grants, n3 refuses (voted), n4 and n5 never get the request
    net.blocked = {("n1", "n4"), ("n1", "n5")}
    net.now = max(net.now, net["n1"].next_deadline())
    net.tick("n1")
    t0 = net.now
    assert net["n1"].role == "candidate" and net["n1"].term == 1
    net.deliver_all()
    assert net["n1"].role == "candidate"  # 2 granted, 1 refused of 5: undecided
    net.heal()
    net.tick("n1", t0 + 0.1)
    assert sorted(d for d, _ in _vote_requests(net, "n1")) == ["n4", "n5"]
    net.deliver_all()
    assert net.leaders() == ["n1"] and net["n1"].term == 1
    assert net["n4"].vote == "n1"
    # a leader retries nothing: its next deadline is the heartbeat's
    net.tick("n1", t0 + 0.2)
    assert _vote_requests(net, "n1") == []


def test_retries_stop_when_the_election_times_out(make_net):
    """The retry does not postpone the election timeout: at it, a new election
    (a new term) begins, and its requests go to every voter again."""
    net = make_net(["n1", "n2", "n3"], config=NO_PREVOTE)
    net.isolate("n1")
    net.timeout("n1")
    net.deliver_all()  # lost
    t0 = net.now
    rounds = []
    while net["n1"].term == 1:
        net.tick("n1", net["n1"].next_deadline())
        rounds.append((net.now - t0, sorted(d for d, m in _vote_requests(net, "n1"))))
        net.deliver_all()
    *retries, (elapsed, last) = rounds
    assert 1.0 <= elapsed < 2.0  # the election timeout, drawn from [T, 2T)
    assert len(retries) == int(elapsed / 0.1 + 1e-9)  # one retry per heartbeat interval
    assert all(to == ["n2", "n3"] for _, to in retries)
    assert net["n1"].term == 2 and net["n1"].role == "candidate"
    assert last == ["n2", "n3"]


def test_a_lost_pre_vote_is_resent_too(make_net):
    net = make_net(["n1", "n2", "n3"])  # Pre-Vote on (the default)
    net.blocked |= {("n1", "n2"), ("n1", "n3")}
    net.timeout("n1")
    t0 = net.now
    assert net["n1"].role == "precandidate"
    net.deliver_all()
    net.heal()
    net.tick("n1", t0 + 0.1)
    sent = _vote_requests(net, "n1")
    assert sorted(d for d, _ in sent) == ["n2", "n3"]
    assert {(m.term, m.pre_vote) for _, m in sent} == {(1, True)}
    net.deliver_all()  # pre-vote won -> candidate of term 1 -> leader
    assert net.leaders() == ["n1"] and net["n1"].term == 1
