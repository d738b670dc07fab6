"""Leader writes its log in parallel with replication (dissertation 10.2.1,
``RaftConfig(parallel_leader_write=True)``): its AppendEntries leave before its own
sync, it counts itself toward a commit only after the persister reports that sync
(``on_persisted``), and a leader crash that loses its un-synced entries loses
nothing committed. ``net.manual`` nodes have a persister that completes only when
the test says so (``net.complete``)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft import kv
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.messages import AppendEntries, AppendEntriesResponse
from clusterfunk.sim.disk import SimDisk
from clusterfunk.sim.raft_storage import SimStorage

PAR = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1, parallel_leader_write=True)


def elect(net, sid: str = "n1") -> None:
    net.timeout(sid)
    net.deliver_all()
    assert net[sid].role == "leader"
    net.deliver_all()


def test_append_entries_leave_before_the_leaders_own_sync(make_net):
    net = make_net(["n1", "n2", "n3"], config=PAR)
    elect(net)
    net.manual.add("n1")
    leader = net["n1"]
    syncs = net.storages["n1"].syncs
    idx, _ = net.call("n1", lambda c, now: c.propose(now, kv.encode_put("k", "v")))
    sent = [m for d, _s, m in net.queue if isinstance(m, AppendEntries)]
    assert {d for d, _s, m in net.queue if isinstance(m, AppendEntries)} == {"n2", "n3"}
    assert sent and net.storages["n1"].syncs == syncs  # sent, not yet synced here
    assert net.inflight["n1"]  # the batch is with the persister
    # One follower acknowledges; the leader's write is not durable: no majority yet.
    net.isolate("n3")
    net.deliver_all()
    assert leader.commit_index < idx
    net.complete("n1")  # the leader's own sync: now n1 + n2 are a majority
    assert net.storages["n1"].syncs == syncs + 1
    assert leader.commit_index >= idx


def test_two_followers_commit_without_the_leaders_sync(make_net):
    net = make_net(["n1", "n2", "n3"], config=PAR)
    elect(net)
    idx, _ = net.call("n1", lambda c, now: c.propose(now, kv.encode_put("k", "v")))
    net.deliver_all()  # both followers synced and answered: a majority without n1
    assert net["n1"].commit_index >= idx


def test_single_voter_commits_after_its_own_sync(make_net):
    net = make_net(["n1"], config=PAR)
    net.timeout("n1")
    assert net["n1"].role == "leader"
    net.manual.add("n1")
    idx, _ = net.call("n1", lambda c, now: c.propose(now, kv.encode_put("k", "v")))
    assert net["n1"].commit_index < idx
    net.advance(1.0)  # time alone commits nothing
    assert net["n1"].commit_index < idx
    net.complete("n1")
    assert net["n1"].commit_index >= idx and net["n1"].last_applied >= idx


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 6), st.booleans())
def test_leader_crash_before_its_own_sync_loses_nothing_committed(make_net, seed, n, ack_one):
    """Simulated disks (a crash keeps a random prefix of un-synced writes): the
    leader proposes ``n`` entries and crashes before its own sync, after one or
    both followers acknowledged. Then the one follower that may hold the entries
    alone (n2) is cut off and the restarted old leader and n3 elect a leader:
    every entry the old leader had committed must be in that leader's log (it
    would not be, had the old leader counted its un-synced copy)."""
    rng = random.Random(seed)
    disks: dict[str, SimDisk] = {}

    def factory() -> SimStorage:
        d = SimDisk()
        disks[f"n{len(disks) + 1}"] = d
        return SimStorage(d)

    net = make_net(["n1", "n2", "n3"], config=PAR, storage_factory=factory)
    elect(net)
    for i in range(n):
        net.call("n1", lambda c, now, i=i: c.propose(now, kv.encode_put(f"k{i}", "v")))
    if ack_one:
        net.isolate("n3")  # only n2 acknowledges: nothing commits without n1's sync
    net.deliver_all()
    committed = net["n1"].commit_index
    entries = {i: net["n1"].log.entry(i) for i in range(1, committed + 1)}
    net.crash("n1")
    disks["n1"].crash(rng)
    net.heal()
    net.isolate("n2")
    net.restart("n1")
    net.advance(4.0)
    leaders = [s for s in ("n1", "n3") if net[s].role == "leader"]
    assert leaders, "n1 and n3 elect a leader"
    new = net[leaders[0]]
    for i, e in entries.items():
        assert new.log.entry(i) == e, f"committed entry {i} lost"
    net.heal()
    net.advance(3.0)
    leader = next(c for c in net.cores.values() if c.role == "leader")
    for c in net.cores.values():
        assert c.commit_index == leader.commit_index
        for i in range(1, leader.commit_index + 1):
            assert c.log.entry(i) == leader.log.entry(i)


def test_a_deposed_leader_syncs_its_own_entries_before_answering_as_follower(make_net):
    """A leader deposed while its newest entries are not durable yet (written in
    parallel) must not answer as a follower before they are: it could otherwise
    acknowledge them to the next leader from volatile memory."""
    net = make_net(["n1", "n2", "n3"], config=PAR)
    elect(net)
    net.manual.add("n1")
    c = net["n1"]
    t = c.term
    late, _ = net.call("n1", lambda c, now: c.propose(now, kv.encode_put("late", "x")))
    assert net.inflight["n1"] and c.role == "leader"
    net.queue.clear()  # its AppendEntries are lost
    # n2 leads term t+1 and asks n1 whether it holds `late` (as a follower it does)
    net.call("n1", lambda c, now: c.on_message(
        now, "n2:8300", AppendEntries.make(t + 1, "n2", late, t, (), 0), True))
    assert c.role == "follower" and c.term == t + 1
    assert not [m for d, s, m in net.queue if s == "n1:8300"], "no answer before the sync"
    (_wait, held_sends), = net.held["n1"]
    assert held_sends[0].msg == AppendEntriesResponse(t + 1, "n1", True, late)
    net.complete("n1")
    answers = [m for d, s, m in net.queue if s == "n1:8300"]
    assert answers == [AppendEntriesResponse(t + 1, "n1", True, late)]
