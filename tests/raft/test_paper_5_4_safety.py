"""Raft paper 5.4: safety. The election restriction (5.4.1), committing entries from
previous terms (5.4.2, Figure 8), State Machine Safety."""

from __future__ import annotations

from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.messages import AppendEntries, RequestVote

S = ["s1", "s2", "s3", "s4", "s5"]


def test_5_4_1_election_restriction_denies_votes_to_stale_logs(make_net):
    net = make_net([], bootstrap=False)
    net.preload("s1", S[:3], [1, 1, 2], term=2)
    net.preload("s2", S[:3], [1, 1, 2, 2], term=2)
    net.preload("s3", S[:3], [1, 1, 2, 2], term=2)
    net.timeout("s1")
    net.deliver_all()
    assert net["s1"].role != "leader"
    net["s2"].on_message(net.now, "s1:8300", RequestVote(5, "s1", 3, 2), True)
    out = net.take("s2")
    assert out.sends[0].msg.granted is False
    net.elect("s2")  # the most up-to-date log wins
    assert net.log_terms("s1")[:4] == [1, 1, 2, 2]


def _figure_8_setup(make_net):
    """State (b)->(c) of Figure 8: s1 (term 2 leader) replicated index 2 to s2 only;
    s5 won term 3 (votes s3, s4, s5) and wrote its own index 2; s5 is down; s1 is
    about to lead term 4."""
    cfg = RaftConfig(max_entries_per_msg=1)
    net = make_net([], bootstrap=False, config=cfg)
    net.preload("s1", S, [1, 2], term=3)
    net.preload("s2", S, [1, 2], term=3)
    net.preload("s3", S, [1], term=3, vote="s5")
    net.preload("s4", S, [1], term=3, vote="s5")
    net.preload("s5", S, [1, 3], term=3, vote="s5")
    net.crash("s5")
    return net


def test_5_4_2_figure_8_leader_does_not_commit_old_term_entries_by_counting(make_net):
    net = _figure_8_setup(make_net)
    net.timeout("s1")
    # (c): the term-2 entry reaches s3 (a majority holds it); every frame that would
    # make a follower store the term-4 no-op is lost (s1 crashes before it gets out).
    held = []

    def filt(q):
        d, _s, msg = q
        if isinstance(msg, AppendEntries) and any(e.term == 4 for e in msg.entries) \
                and net[d].log.term_at(msg.prev_index) == msg.prev_term:
            held.append(q)
            return False
        return True

    for _ in range(20):
        for _ in range(200):
            net.queue = [q for q in net.queue if filt(q)]
            if not net.queue:
                break
            net.deliver_one()
        net.now += 0.1
        net.tick("s1")
    assert net["s1"].role == "leader" and net["s1"].term == 4
    assert held
    assert [net[s].log.term_at(2) for s in ("s1", "s2", "s3")] == [2, 2, 2]
    assert net["s1"].progress["s3"].match >= 2
    assert net["s1"].commit_index == 0
    # s2 holds index 2 too; once the leader knows, a majority (s1, s2, s3) has the
    # term-2 entry, yet counting replicas of an older term's entry must not commit it
    net["s1"].progress["s2"].update(2)
    net["s1"]._maybe_commit()
    assert net["s1"].commit_index == 0
    # (d): s1 crashes, s5 comes back and is elected by s2, s3, s4; it overwrites index 2
    net.crash("s1")
    net.now += 1.0
    net.restart("s5")
    net.timeout("s5")  # its pre-vote for term 4 fails but teaches it the current term
    net.deliver_all()
    assert net["s5"].term == 4
    net.elect("s5")  # s5's last entry (term 3) beats s2's, s3's (term 2) and s4's
    net.advance(3.0)
    assert net.leaders() == ["s5"]
    for s in ("s2", "s3", "s4", "s5"):
        assert net[s].log.term_at(2) == 3
    # State Machine Safety: nobody ever applied the term-2 entry at index 2
    assert not [x for x in net.trace if x[1] == "raft.apply" and x[2]["index"] == 2
                and x[2]["term"] == 2]


def test_5_4_2_figure_8_e_committing_a_current_term_entry_commits_the_old_one(make_net):
    net = _figure_8_setup(make_net)
    net.elect("s1")
    net.advance(0.5)
    # (e): the no-op of term 4 reaches a majority: index 2 (term 2) commits with it
    assert net["s1"].commit_index == 3
    assert net["s1"].log.term_at(2) == 2
    net.restart("s5")
    net.advance(3.0)
    assert net.leaders() == ["s1"]
    assert net["s5"].log.term_at(2) == 2  # s5's conflicting entry was overwritten
    applied = {(x[2]["index"], x[2]["term"], x[2]["digest"]) for x in net.trace
               if x[1] == "raft.apply"}
    assert len({(i) for i, _t, _d in applied}) == len(applied)  # one entry per index


def test_5_4_3_leader_completeness_new_leader_has_all_committed_entries(make_net):
    net = make_net(S)
    net.elect("s1")
    for i in range(5):
        net.propose("s1", b"e%d" % i)
        net.deliver_all()
    committed = net["s1"].commit_index
    net.crash("s1")
    net.advance(5.0)
    (new,) = net.leaders()
    for i in range(1, committed + 1):
        assert net[new].log.entry(i) == net["s1"].log.entry(i)
