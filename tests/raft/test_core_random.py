"""Randomised schedules against the pure core: messages reordered, duplicated and
lost, crashes and restarts (storage kept), partitions, random proposals and reads,
membership changes and leadership transfers. After every step the Raft safety
properties (paper Figure 3) are checked; at the end, after healing, a leader must
exist and every committed entry must be in every log."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.errors import RaftError
from clusterfunk.raft.events import ReadReady

CFG = RaftConfig(snapshot_threshold=12, trailing_logs=4, snapshot_chunk_bytes=40,
                 max_entries_per_msg=3, max_inflight=4)


class Checker:
    def __init__(self, net) -> None:
        self.net = net
        self.seen = 0
        self.leaders: dict[int, str] = {}
        self.applied: dict[int, tuple[int, str]] = {}
        self.committed: dict[int, object] = {}
        self.reads: dict[int, int] = {}  # ctx -> highest committed index at issue

    def issue_read(self, ctx: int) -> None:
        self.reads[ctx] = max(self.committed, default=0)

    def check(self) -> None:
        net = self.net
        for sid, ev, f in net.trace[self.seen:]:
            if ev == "raft.role" and f["role"] == "leader":
                assert self.leaders.setdefault(f["term"], sid) == sid, "Election Safety"
            elif ev == "raft.apply":
                key = (f["term"], f["digest"])
                assert self.applied.setdefault(f["index"], key) == key, "State Machine Safety"
        self.seen = len(net.trace)
        for evs in net.events.values():  # linearizable reads: nothing committed missed
            for e in evs:
                if isinstance(e, ReadReady):
                    assert e.index >= self.reads[e.ctx], "stale read"
                    self.reads[e.ctx] = -1
        live = [c for s, c in net.cores.items() if s not in net.down]
        for c in live:  # Leader Append-Only is implied by Leader Completeness here
            for i in range(max(c.log.base_index + 1, 1), c.commit_index + 1):
                e = c.log.entry(i)
                prev = self.committed.setdefault(i, e)
                assert prev == e, f"committed entry {i} differs on {c.id}"
        # Leader Completeness (Figure 3) binds the leaders of the terms after a
        # commit: every entry committed so far was committed in a term <= the highest
        # term, whose leader must hold it. (A stale leader of an older term, cut off,
        # may lack entries committed since.)
        top = max(c.term for c in net.cores.values())
        for c in live:
            if c.role == "leader" and c.term == top:
                for i, e in self.committed.items():
                    if i > c.log.base_index:
                        assert i <= c.log.last_index and c.log.entry(i) == e, \
                            "Leader Completeness"
        for a in live:  # Log Matching
            for b in live:
                if a.id >= b.id:
                    continue
                lo = max(a.log.base_index, b.log.base_index) + 1
                hi = min(a.log.last_index, b.log.last_index)
                for i in range(hi, lo - 1, -1):
                    if a.log.term_at(i) == b.log.term_at(i):
                        for j in range(lo, i + 1):
                            assert a.log.entry(j) == b.log.entry(j), "Log Matching"
                        break


def run_schedule(make_net, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(1, rng.choice([3, 4, 5]) + 1)]
    net = make_net(ids, config=CFG, seed=seed)
    chk = Checker(net)
    counter = 0
    for _ in range(steps):
        r = rng.random()
        if r < 0.45 and net.queue:  # deliver a random message (reordering)
            i = rng.randrange(len(net.queue))
            net.queue.insert(0, net.queue.pop(i))
            net.deliver_one()
        elif r < 0.5 and net.queue:  # duplicate one
            net.queue.append(rng.choice(net.queue))
        elif r < 0.55 and net.queue:  # lose one
            net.queue.pop(rng.randrange(len(net.queue)))
        elif r < 0.72:  # time passes
            net.now += rng.choice([0.01, 0.05, 0.1, 0.3])
            for s in ids:
                if s not in net.down and net.cores[s].next_deadline() <= net.now:
                    net.tick(s)
        elif r < 0.85:  # a client proposes, usually to a leader
            leaders = net.leaders()
            s = rng.choice(leaders) if leaders and rng.random() < 0.8 else rng.choice(ids)
            if s not in net.down:
                counter += 1
                with contextlib.suppress(RaftError):
                    net.propose(s, b"c%d" % counter)
        elif r < 0.88:
            s = rng.choice(ids)
            if s not in net.down:
                counter += 1
                chk.issue_read(counter)
                lease = rng.random() < 0.5
                with contextlib.suppress(RaftError):
                    net.call(s, lambda c, now, k=counter, lease=lease:
                             c.read_index(now, k, lease))
        elif r < 0.91:
            s = rng.choice(ids)
            if s in net.down:
                net.restart(s)
            elif len(net.down) < (len(ids) - 1) // 2:
                net.crash(s)
        elif r < 0.94:
            if net.blocked:
                net.heal()
            else:
                net.isolate(rng.choice(ids))
        elif r < 0.96:
            s = rng.choice(ids)
            if s not in net.down:
                with contextlib.suppress(RaftError):
                    net.call(s, lambda c, now: c.transfer_leadership(now))
        else:  # membership: demote/re-add a random other server as non-voter / voter
            s, t = rng.choice(ids), rng.choice(ids)
            if s not in net.down and s != t:
                c = net.cores[s]
                try:
                    if t in c.configuration.voters and len(c.configuration.voters) > 3:
                        net.call(s, lambda c, now, t=t: c.remove_server(now, t))
                    elif t in c.configuration.nonvoters:
                        net.call(s, lambda c, now, t=t: c.add_voter(now, t, f"{t}:8300"))
                    elif t not in c.configuration.voters:
                        net.call(s, lambda c, now, t=t: c.add_nonvoter(now, t, f"{t}:8300"))
                except RaftError:
                    pass
        chk.check()
    # heal: restart everyone, deliver everything, let time pass
    net.heal()
    for s in list(net.down):
        net.restart(s)
    net.advance(8.0)
    chk.check()
    leaders = net.leaders()
    assert len(leaders) == 1, "liveness: one leader after healing"
    lead = net.cores[leaders[0]]
    members = lead.configuration.members()
    net.advance(2.0)
    for s in members:
        c = net.cores[s]
        assert c.commit_index == lead.commit_index, (s, c.commit_index, lead.commit_index)
        assert net.sms[s].data == net.sms[leaders[0]].data
    chk.check()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32))
def test_random_schedules_keep_raft_safety_properties(make_net, seed):
    run_schedule(make_net, seed, 500)
