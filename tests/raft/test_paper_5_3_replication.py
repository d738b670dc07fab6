"""Raft paper 5.3: log replication, the consistency check, Figure 7, batching and
pipelining."""

from __future__ import annotations

from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.messages import AppendEntries, AppendEntriesResponse

LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def test_5_3_figure_7_every_follower_log_is_repaired_to_match_the_leader(make_net):
    """Figure 7: the leader of term 8 and followers (a)-(f) with missing, extra and
    conflicting entries; after replication every log equals the leader's."""
    members = ["L", *FIGURE_7]
    net = make_net([], bootstrap=False)
    net.preload("L", members, LEADER, term=7)
    for sid, terms in FIGURE_7.items():
        net.preload(sid, members, terms, term=7 if sid == "d" else 6)
    net.elect("L")  # votes from a, b, e, f (c and d have more up-to-date logs)
    assert net["L"].term == 8
    assert {s for s, c in net.cores.items() if c.vote == "L"} == {"L", "a", "b", "e", "f"}
    net.advance(1.0)
    want = [*LEADER, 8]  # plus the new leader's no-op
    for sid in members:
        assert net.log_terms(sid) == want, sid
        assert net[sid].commit_index == len(want)
        for i in range(1, len(want) + 1):
            assert net[sid].log.entry(i) == net["L"].log.entry(i)
    # conflict hints skip whole terms: far fewer rejections than missing entries
    assert not net.dropped_msgs
    rejects = [(d, m) for d, s, m in net.delivered
               if isinstance(m, AppendEntriesResponse) and not m.success]
    assert len(rejects) <= 2 * len(FIGURE_7)  # hints: at most a couple per follower


def test_5_3_fast_backtracking_uses_few_round_trips(make_net):
    members = ["L", "f"]
    net = make_net([], bootstrap=False)
    net.preload("L", members, [1] + [4] * 30, term=4)
    net.preload("f", members, [1] + [2] * 20 + [3] * 20, term=3)
    net.elect("L")
    assert net.log_terms("f") == net.log_terms("L")
    # the conflict hints skip a whole term per round trip: terms 3, then 2
    rejects = [m for d, s, m in net.delivered
               if isinstance(m, AppendEntriesResponse) and not m.success]
    assert [(m.conflict_term, m.conflict_index) for m in rejects] == [(3, 22), (2, 2)]
    assert net["L"].progress["f"].match == net["L"].last_index


def test_5_3_batching_one_append_per_follower_per_step(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.2)
    # one input (a batch proposal) is one step
    net.call("n1", lambda c, now: c.propose_many(now, [b"x%d" % i for i in range(50)]))
    batch = [m for d, s, m in net.queue if isinstance(m, AppendEntries)]
    assert len(batch) == 2 and all(len(m.entries) == 50 for m in batch)
    net.deliver_all()
    assert all(c.commit_index == net["n1"].last_index for c in net.cores.values()) or \
        net["n1"].commit_index == net["n1"].last_index


def test_5_3_pipelining_is_bounded_by_the_inflight_window(make_net):
    cfg = RaftConfig(max_entries_per_msg=2, max_inflight=3)
    net = make_net(["n1", "n2", "n3"], config=cfg)
    net.elect("n1")
    net.advance(0.2)
    net.call("n1", lambda c, now: c.propose_many(now, [b"x%d" % i for i in range(20)]))
    to_n2 = [m for d, s, m in net.queue if d == "n2" and isinstance(m, AppendEntries)]
    assert len(to_n2) == 3  # the window, not 10 messages
    assert [len(m.entries) for m in to_n2] == [2, 2, 2]
    assert [m.prev_index for m in to_n2] == [2, 4, 6]  # optimistic: next runs ahead
    net.deliver_all()
    assert net["n1"].commit_index == net["n1"].last_index == 22
    net.advance(0.3)
    assert net["n2"].commit_index == 22 and net.sms["n2"].applied == 22


def test_5_3_followers_apply_only_committed_entries_in_order(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.isolate("n3")
    idx, _term = net.propose("n1", b"\x93\xa3put\xa1k\xa1v")
    net.deliver_all()
    assert net["n1"].commit_index == idx  # n1 + n2 are a majority
    net.heal()
    net.advance(0.5)
    for sid in ("n1", "n2", "n3"):
        applied = net.applied(sid)
        assert [a[0] for a in applied] == list(range(1, idx + 1))
        assert net.sms[sid].data == {"k": "v"}


def test_5_3_lost_pipelined_messages_are_resent(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    net.propose("n1", b"a")
    net.queue = [q for q in net.queue if q[0] != "n3"]  # the frame to n3 is lost
    net.deliver_all()
    net.propose("n1", b"b")  # n3 sees a gap, rejects, the leader probes back
    net.deliver_all()
    net.advance(0.5)
    assert net.log_terms("n3") == net.log_terms("n1")
    assert net["n3"].commit_index == net["n1"].commit_index


def test_5_3_idle_lost_messages_are_recovered_by_heartbeats(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    net.propose("n1", b"a")
    net.queue = [q for q in net.queue if q[0] != "n3"]
    net.deliver_all()
    net.advance(1.0)  # no new proposals: heartbeat answers reveal n3 is stuck
    assert net["n3"].log.last_index == net["n1"].log.last_index
