"""Bad input never crashes a node: unknown servers, stale terms, malformed entries,
oversized proposals, application errors, garbage bytes through the driver."""

from __future__ import annotations

import pytest

from clusterfunk.raft import kv
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.errors import NotLeader, ProposalTooLarge
from clusterfunk.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HeartbeatResponse,
    RequestVote,
)
from clusterfunk.raft.statemachine import ApplyError


def test_unknown_servers_and_stale_responses_are_dropped_and_counted(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    c = net["n1"]
    t = c.term
    before = c.commit_index
    c.on_message(net.now, "x:1", AppendEntriesResponse(t, "stranger", True, 99), True)
    c.on_message(net.now, "x:1", HeartbeatResponse(t, "stranger", 5), True)
    c.on_message(net.now, "x:1", RequestVote(t + 1, "stranger", 99, 99), True)
    c.on_message(net.now, "x:1", AppendEntriesResponse(t - 1, "n2", True, 99), True)
    c.on_message(net.now, "x:1", "not a raft message", True)
    c.on_message(net.now, "x:1", AppendEntriesResponse(t, "n1", True, 99), True)
    assert c.role == "leader" and c.term == t and c.commit_index == before
    # strangers are dropped before any term rule (the vote request's higher term
    # is never adopted, not even considered against the lease)
    assert c.dropped["unknown server"] == 3
    assert c.dropped["stale term"] == 1
    assert c.dropped["unexpected message type"] == 1
    assert c.dropped["message from self"] == 1
    assert c.dropped.get("vote request during leader lease", 0) == 0


def test_malformed_entries_are_dropped(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    f = net["n2"]
    last = f.last_index
    lt = f.log.last_term
    f.on_message(net.now, "n1:8300",
                 AppendEntries.make(f.term, "n1", last, lt, (Entry(f.term, 99, b"x"),), 0), True)
    assert f.last_index == last and f.dropped["malformed entry"] == 1
    f.on_message(net.now, "n1:8300",
                 AppendEntries.make(f.term, "n1", last, lt, (Entry(f.term, 3, b"\xc1"),), 0), True)
    assert f.dropped["malformed configuration entry"] == 1 and f.last_index == last
    assert sorted(f.configuration.voters) == ["n1", "n2", "n3"]
    for batch in (b"\xc1", b"\x92\x01\x02", b"\x93\x01\x01\xa1x", b"\x93\x01\x01"):
        f.on_message(net.now, "n1:8300",
                     AppendEntries(f.term, "n1", last, f.log.last_term, batch, 0), True)
    assert f.dropped["malformed entry"] == 5 and f.last_index == last


def test_entries_conflicting_with_committed_ones_are_refused(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.propose("n1", b"x")
    net.advance(0.3)
    f = net["n2"]
    assert f.commit_index == 3
    before = [f.log.entry(i) for i in range(1, 4)]
    # a (buggy or forged) leader message rewriting committed entry 3
    f.on_message(net.now, "n1:8300", AppendEntries.make(f.term, "n1", 3, f.log.term_at(3), (), 3),
                 True)
    f.on_message(net.now, "n1:8300",
                 AppendEntries.make(f.term, "n1", 2, f.log.term_at(2),
                               (Entry(f.term + 1, 1, b"evil"), Entry(f.term + 1, 1, b"y")), 3),
                 True)
    assert [f.log.entry(i) for i in range(1, 4)] == before  # committed prefix intact
    # the overlap with the committed prefix is skipped, never compared or rewritten
    assert f.log.entry(3).data == b"x"


def test_oversized_proposals_get_a_clear_error(make_net):
    net = make_net(["n1", "n2", "n3"], config=RaftConfig(max_proposal_bytes=100))
    net.elect("n1")
    with pytest.raises(ProposalTooLarge, match="101 bytes exceeds the limit of 100"):
        net.propose("n1", bytes(101))
    with pytest.raises(NotLeader) as ei:
        net.propose("n2", b"x")
    assert (ei.value.leader_id, ei.value.leader_address) == ("n1", "n1:8300")
    with pytest.raises(TypeError):
        net.propose("n1", "not bytes")


def test_state_machine_errors_become_results(make_net):
    class Boom(kv.KVStore):
        def apply(self, index, command):
            raise RuntimeError("boom")

    net = make_net(["n1"])
    net.sms["n1"] = Boom()
    net["n1"].sm = net.sms["n1"]
    net.advance(2.5)
    idx, term = net.propose("n1", b"x")
    assert net.applied("n1")[-1] == (idx, term, ApplyError("RuntimeError: boom"))


def test_garbage_bytes_through_the_driver_in_simulation():
    import random

    from clusterfunk.raft.core import RaftCore
    from clusterfunk.sim.raft_storage import SimPersister, SimStorage
    from clusterfunk.sim.simulation import Simulation

    sim = Simulation(3)
    boot = {f"n{i}": f"n{i}:8300" for i in (1, 2, 3)}

    def factory(host):
        store = SimStorage(host.disk)
        core = RaftCore(host.name, store, kv.KVStore(), host.rng, RaftConfig(), boot)
        return host.driver(core, 8300, persister=SimPersister.for_host(host, store))

    for n in boot:
        sim.add_node(n, factory)
    sim.run_until(3.0)
    rng = random.Random(0)
    for n in boot:
        d = sim.app(n)
        for _ in range(50):
            d.on_frame("n9:8300", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
    sim.run_until(6.0)
    leaders = [n for n in boot if sim.app(n).core.role == "leader"]
    assert len(leaders) == 1
    assert sum(sim.app(n).stats.malformed for n in boot) > 100


def test_forged_match_index_and_oversized_snapshot_are_dropped(make_net):
    from clusterfunk.raft.messages import InstallSnapshot

    net = make_net(["n1", "n2", "n3"], config=RaftConfig(max_snapshot_bytes=100))
    net.elect("n1")
    c = net["n1"]
    c.on_message(net.now, "n2:8300", AppendEntriesResponse(c.term, "n2", True, 10**6), True)
    assert c.dropped["match index beyond the log"] == 1
    assert c.progress["n2"].match <= c.last_index
    f = net["n2"]
    for off in range(0, 200, 50):
        f.on_message(net.now, "n1:8300",
                     InstallSnapshot(f.term, "n1", 50, f.term, b"", off, bytes(50), False), True)
    assert f.dropped["snapshot too large"] == 1 and len(f._snap_buf) <= 100


def test_terms_beyond_the_bound_are_dropped_and_the_bound_itself_stores(make_net, tmp_path):
    """Regression: one Heartbeat with term 2**63 killed every SQLite node
    (OverflowError in save_hard_state). The wire refuses > 2**63-1; the core refuses
    terms above MAX_TERM, so term + 1 always fits a signed 64-bit column."""
    import msgpack

    from clusterfunk import wire
    from clusterfunk.raft.messages import MAX_TERM, Heartbeat
    from clusterfunk.raft.sqlite_store import SQLiteStorage
    from clusterfunk.raft.storage import HardState

    tag = {c: t for t, c in wire.registered_tags().items()}[Heartbeat]
    with pytest.raises(wire.WireError, match="out of range"):
        wire.decode(msgpack.packb([wire.WIRE_VERSION, tag, 2**63, "n1", 0, 0]))
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    f = net["n2"]
    t = f.term
    for term in (MAX_TERM + 1, wire.MAX_WIRE_INT):
        f.on_message(net.now, "x:1", Heartbeat(term, "n1", 0, 0), True)
    assert f.term == t and f.dropped["term out of range"] == 2
    # the largest accepted term, plus one election, still stores
    store = SQLiteStorage(str(tmp_path / "raft.db"))
    store.save_hard_state(HardState(MAX_TERM + 1, "n2", 0))
    store.sync()
    store.close()
    again = SQLiteStorage(str(tmp_path / "raft.db"))
    assert again.recover().hard_state.term == MAX_TERM + 1
    again.close()
