"""The persistence seam (etcd-raft style): the core emits what must be durable in
its Output, the driver hands it to a persister and holds every message that
depends on it until the persister reports it durable (``on_persisted``).

Tests with a persister that completes only when told (``net.manual`` /
``net.complete`` in the Raft harness, a fake persister under the real Driver),
and a property test over random completion schedules checked by the Raft safety
checker of the simulator.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft import kv
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.messages import (
    AppendEntriesResponse,
    RequestVote,
    RequestVoteResponse,
)
from clusterfunk.raft.persist import EntriesRecord, HardStateRecord, apply_records
from clusterfunk.raft.storage import MemoryStorage
from clusterfunk.runtime.api import DiskFailure
from clusterfunk.runtime.driver import Driver
from clusterfunk.sim.checkers.raft import SafetyChecker
from clusterfunk.sim.disk import SimDisk
from clusterfunk.sim.raft_storage import SimStorage
from clusterfunk.sim.workloads.raft import CoreLogView

NOPRE = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1, pre_vote=False)


def test_a_vote_leaves_only_once_it_is_durable(make_net):
    net = make_net(["n1", "n2", "n3"], config=NOPRE)
    net.manual.update(["n2", "n3"])
    net.timeout("n1")  # n1's own RequestVotes wait for n1's term and vote (auto here)
    net.deliver_all()
    assert net["n2"].vote == "n1"  # granted in memory ...
    votes = [m for d, s, m in net.delivered if isinstance(m, RequestVoteResponse)]
    assert votes == []  # ... but not sent: not durable yet
    assert net.storages["n2"].hard_state.vote == "n1"  # written, not synced
    assert net["n1"].role == "candidate"
    net.complete("n2")
    net.deliver_all()
    assert net["n1"].role == "leader"


def test_a_candidates_request_votes_wait_for_its_term_and_vote(make_net):
    net = make_net(["n1", "n2", "n3"], config=NOPRE)
    net.manual.add("n1")
    net.timeout("n1")
    assert net["n1"].role == "candidate"
    assert not [m for _d, _s, m in net.queue if isinstance(m, RequestVote)]
    net.complete("n1")
    assert len([m for _d, _s, m in net.queue if isinstance(m, RequestVote)]) == 2


def test_append_entries_responses_wait_for_the_followers_entries(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.manual.update(["n2", "n3"])
    idx, _ = net.propose("n1", kv.encode_put("k", "v"))
    net.deliver_all()
    acks = [m for d, s, m in net.delivered
            if isinstance(m, AppendEntriesResponse) and m.match_index >= idx]
    assert acks == [] and net["n1"].commit_index < idx
    net.complete("n2")
    net.deliver_all()
    assert net["n1"].commit_index >= idx  # n1 (durable) + n2 (now durable)


def test_the_leader_counts_itself_only_once_its_entries_are_durable(make_net):
    """Without parallel writes too: a leader's entry replicated to one follower of
    three is not committed until the leader's own copy is durable."""
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.manual.add("n1")
    net.isolate("n3")
    idx, _ = net.propose("n1", kv.encode_put("k", "v"))
    net.deliver_all()  # held: nothing reached n2 (the AppendEntries wait too)
    assert net["n1"].commit_index < idx
    net.complete("n1")
    net.deliver_all()
    assert net["n1"].commit_index >= idx


def test_drain_is_a_getter():
    core = RaftCore("n1", MemoryStorage(), kv.KVStore(), random.Random(1), RaftConfig(),
                    {"n1": "n1:1"})
    core.start(0.0)
    first = core.drain()
    assert first is not None and first.persist_token == 1
    assert isinstance(first.persist[0], EntriesRecord)  # the bootstrap configuration
    assert core.drain() is None and core.drain() is None  # nothing more, no side effect
    core.on_tick(core.next_deadline())  # elects itself: term and vote, then a no-op
    out = core.drain()
    assert out is not None and out.persist_token == 2
    assert any(isinstance(r, HardStateRecord) and r.hs.vote == "n1" for r in out.persist)
    assert core.commit_index < core.last_index  # nothing of its term is durable yet
    core.on_persisted(2.0, 1)
    assert core.commit_index < core.last_index
    core.on_persisted(2.0, 2)
    assert core.commit_index == core.last_index


# -- the real Driver with a fake persister -------------------------------------


class FakeTransport:
    local_address = "n1:1"
    max_datagram = 1400

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []

    def bind(self, handler: Any) -> None:
        self.handler = handler

    def send_datagram(self, dest: str, data: bytes) -> None:
        raise AssertionError("Raft sends on streams")

    def send_frame(self, dest: str, data: bytes) -> None:
        self.frames.append((dest, data))


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def schedule(self, driver: Any, deadline: float) -> None:
        self.deadline = deadline


class DelayedPersister:
    """Writes at once, reports durable only when the test calls ``complete``."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.pending: list[int] = []
        self.fail = False

    def bind(self, handler: Any) -> None:
        self.handler = handler

    def persist(self, records: list[Any], token: int) -> None:
        apply_records(self.storage, records)
        if token:
            self.pending.append(token)

    def complete(self) -> None:
        if self.fail:
            self.handler.on_persist_failed(DiskFailure("fsync: EIO"))
            return
        self.storage.sync()
        token, self.pending = self.pending[-1], []
        self.handler.on_persisted(token)


def _driver(persister_cls: Any = DelayedPersister) -> tuple[Driver, RaftCore, Any, Any, Any]:
    st_ = MemoryStorage()
    core = RaftCore("n1", st_, kv.KVStore(), random.Random(3), NOPRE,
                    {"n1": "n1:1", "n2": "n2:1", "n3": "n3:1"})
    tr, clock, p = FakeTransport(), FakeClock(), persister_cls(st_)
    d = Driver("n1", core, tr, clock, persister=p)
    d.start()
    return d, core, tr, clock, p


def test_driver_holds_messages_until_the_persister_reports_them_durable():
    d, core, tr, clock, p = _driver()
    p.complete()  # the bootstrap entry
    clock.t = core.next_deadline()
    d.on_timer()  # becomes candidate: RequestVotes depend on the new term and vote
    assert core.role == "candidate" and tr.frames == [] and p.pending
    p.complete()
    assert sorted(dest for dest, _ in tr.frames) == ["n2:1", "n3:1"]


def test_driver_fail_stop_on_a_failed_sync():
    d, core, tr, clock, p = _driver()
    p.complete()
    clock.t = core.next_deadline()
    d.on_timer()
    p.fail = True
    p.complete()  # the fsync of the term and vote failed
    assert not d.running and d.persist_failure is not None
    assert tr.frames == []  # the RequestVotes never leave
    d.on_frame("n2:1", b"\x00")  # and no input is taken any more
    with pytest.raises(RuntimeError):
        d.call(lambda c, now: c.propose(now, b"x"))


class RaisingPersister(DelayedPersister):
    def persist(self, records: list[Any], token: int) -> None:
        raise OSError(5, "Input/output error")


def test_driver_fail_stop_when_a_synchronous_persister_raises():
    with pytest.raises(DiskFailure):
        _driver(RaisingPersister)


# -- property: random completion schedules keep Raft safe ---------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_random_completion_delays_keep_raft_safe(make_net, seed):
    """Every node's persister completes at random moments (and nodes crash, losing
    a random prefix of what was not synced) while elections, proposals and
    deliveries go on: the simulator's Raft safety checker stays clean, and no
    entry a client saw applied is lost."""
    rng = random.Random(seed)
    ids = ["n1", "n2", "n3"]
    disks: dict[str, SimDisk] = {}

    def factory() -> SimStorage:
        d = SimDisk()
        disks[f"n{len(disks) + 1}"] = d
        return SimStorage(d)

    cfg = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1,
                     parallel_leader_write=rng.random() < 0.5)
    net = make_net(ids, config=cfg, storage_factory=factory, seed=seed)
    net.manual.update(ids)
    checker = SafetyChecker(
        ids, lambda n: None if n in net.down else CoreLogView(net[n]), apply_committed=True)
    fed = 0

    def feed() -> None:
        nonlocal fed
        for node, ev, fields in net.trace[fed:]:
            checker({"t": net.now, "node": node, "ev": ev, **fields})
        fed = len(net.trace)

    for _step in range(250):
        r = rng.random()
        sid = rng.choice(ids)
        if sid in net.down:
            if r < 0.1:
                net.restart(sid)
                checker({"t": net.now, "node": "sim", "ev": "sim.restart", "target": sid})
        elif r < 0.35:
            net.complete(sid, rng.randint(1, 2) if net.inflight[sid] else 0)
        elif r < 0.7:
            for _ in range(rng.randint(1, 5)):
                net.deliver_one()
        elif r < 0.85:
            net.advance(rng.choice([0.05, 0.2, 0.6]))
        elif r < 0.95:
            leader = net[sid]
            if leader.role == "leader":
                net.call(sid, lambda c, now, i=_step: c.propose(now, kv.encode_put("k", str(i))))
        elif len(net.down) == 0:
            net.crash(sid)
            disks[sid].crash(rng)
            checker({"t": net.now, "node": "sim", "ev": "sim.crash", "target": sid})
        feed()
        checker.check_logs(net.now)
    for sid in ids:  # quiet end: everything completes, everyone is up
        if sid in net.down:
            net.restart(sid)
        net.manual.discard(sid)
        net.complete(sid)
    net.advance(5.0)
    feed()
    checker.check_logs(net.now)
    assert checker.violations == []
    leaders = net.leaders()
    assert len(leaders) == 1 and not math.isinf(net[leaders[0]].commit_index)
