"""Issue 11, at the Raft core: a server that is not in the configuration cannot
change anybody's term, leader, vote or log. Each test is one attack from the issue
(sender ``mallory``, not a member) and checks that nothing moved and the drop was
counted; the last ones check that legitimate non-members (a server being added,
a leader removing itself) still work."""

from __future__ import annotations

from clusterfunk.raft.config import Configuration
from clusterfunk.raft.messages import (
    ENTRY_COMMAND,
    ENTRY_CONFIG,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)

MALLORY = "mallory:8300"


def _state(c):
    return (c.role, c.term, c.vote, c.leader_id, c.last_index, c.commit_index)


def _three(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    return net


def test_stranger_vote_request_with_transfer_flag_forces_no_election(make_net):
    net = _three(make_net)
    before = {s: _state(net[s]) for s in ("n1", "n2", "n3")}
    t = net["n1"].term
    for s in ("n1", "n2", "n3"):
        # a huge term, an unbeatable log, and the transfer flag (skips the lease)
        net[s].on_message(net.now, MALLORY, RequestVote(t + 100, "mallory", 10**9, t + 100,
                                                         False, True), True)
        assert net[s].drain() is None  # no answer, no trace: nothing happened
    for s in ("n1", "n2", "n3"):
        assert _state(net[s]) == before[s], s
        assert net[s].dropped["unknown server"] >= 1
    net.advance(1.0)
    assert net.leaders() == ["n1"] and net["n1"].term == t


def test_stranger_heartbeats_with_a_higher_term_do_not_depose_the_leader(make_net):
    net = _three(make_net)
    t = net["n1"].term
    for _ in range(5):
        for s in ("n1", "n2", "n3"):
            net[s].on_message(net.now, MALLORY, Heartbeat(t + 1, "mallory", 0, 0), True)
        net.advance(0.1)
    assert net.leaders() == ["n1"]
    assert all(net[s].term == t for s in ("n1", "n2", "n3"))
    assert net["n2"].leader_id == "n1" and net["n3"].leader_id == "n1"


def test_forged_append_entries_from_a_stranger_change_no_log(make_net):
    net = _three(make_net)
    f = net["n2"]
    t = f.term
    last, lt = f.last_index, f.log.last_term
    evil = (Entry(t, ENTRY_COMMAND, b"evil"), Entry(t, ENTRY_COMMAND, b"more evil"))
    for term in (t, t + 1):  # the current term (learnt from replies) and a higher one
        f.on_message(net.now, MALLORY,
                     AppendEntries.make(term, "mallory", last, lt, evil, last + 2), True)
        # the conflict-hint probe the issue used: prev_index far ahead
        f.on_message(net.now, MALLORY,
                     AppendEntries.make(term, "mallory", last + 50, lt, evil, 0), True)
    assert f.drain() is None  # not even a rejection goes back to a stranger
    assert f.last_index == last and f.term == t and f.leader_id == "n1"
    assert f.dropped["unknown server"] == 4
    assert b"evil" not in [f.log.entry(i).data for i in range(1, f.last_index + 1)]


def test_forged_configuration_entry_from_a_stranger_is_not_appended(make_net):
    net = _three(make_net)
    f = net["n2"]
    t = f.term
    cfg = Configuration.make({"mallory": MALLORY, "n2": "n2:8300"})
    f.on_message(net.now, MALLORY, AppendEntries.make(
        t + 1, "mallory", f.last_index, f.log.last_term, (Entry(t + 1, ENTRY_CONFIG,
                                                                 cfg.encode()),), 0), True)
    assert sorted(f.configuration.voters) == ["n1", "n2", "n3"] and f.term == t


def test_stranger_snapshot_is_not_installed(make_net):
    net = _three(make_net)
    f = net["n3"]
    before = _state(f)
    cfg = Configuration.make({"mallory": MALLORY})
    f.on_message(net.now, MALLORY, InstallSnapshot(f.term + 1, "mallory", 10**6, f.term + 1,
                                                   cfg.encode(), 0, b"\x80", True), True)
    assert _state(f) == before and f.snapshot_index == 0
    assert sorted(f.configuration.voters) == ["n1", "n2", "n3"]


def test_stranger_timeout_now_starts_no_election(make_net):
    net = _three(make_net)
    f = net["n2"]
    before = _state(f)
    f.on_message(net.now, MALLORY, TimeoutNow(f.term + 1, "mallory"), True)
    f.on_message(net.now, MALLORY, TimeoutNow(f.term, "mallory"), True)
    assert _state(f) == before and f.dropped["unknown server"] == 2


def test_stranger_responses_with_a_huge_term_do_not_depose_the_leader(make_net):
    net = _three(make_net)
    c = net["n1"]
    t = c.term
    c.on_message(net.now, MALLORY, AppendEntriesResponse(2**40, "mallory", False, 0), True)
    c.on_message(net.now, MALLORY, RequestVoteResponse(2**40, "mallory", False), True)
    assert c.role == "leader" and c.term == t


def test_a_server_waiting_to_be_added_still_accepts_its_leader(make_net):
    net = _three(make_net)
    net.add("n4", None)  # empty storage, no bootstrap: knows no configuration yet
    net.call("n1", lambda c, now: c.add_nonvoter(now, "n4", "n4:8300"))
    net.advance(1.0)
    assert net["n4"].last_index == net["n1"].last_index
    assert "n4" in net["n4"].configuration.nonvoters


def test_a_leader_removing_itself_still_commits_the_removal(make_net):
    net = _three(make_net)
    idx = net.call("n1", lambda c, now: c.remove_server(now, "n1"))
    net.advance(0.5)
    # the followers applied the configuration without n1 while n1 still led
    assert net["n2"].commit_index >= idx and net["n3"].commit_index >= idx
    assert "n1" not in net["n2"].configuration.voters
    net.advance(3.0)
    assert net.leaders() and net.leaders()[0] in ("n2", "n3")
