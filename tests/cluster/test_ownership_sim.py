"""Exclusive ownership in simulation, judged from the trace by the offline audit's
ownership check (``clusterfunk.audit.shards.ShardOwnership``): no ``shard.acquire``
of a shard another node still serves, and a paused holder releases what moved at
the instant it resumes (the freeze rule; its issue-9 regression run is in
tests/sim/test_app_sim.py)."""

from __future__ import annotations

import pytest

from clusterfunk.audit.shards import ShardOwnership
from clusterfunk.sim.netmodel import LinkConfig

from .helpers import make, nemesis

# Every fault kind of the nemesis, pauses included (the freeze rule).
KINDS = ("partition", "crash", "pause", "loss", "duplicate", "reorder", "skew")


def audit(sim, records=None) -> tuple[ShardOwnership, list[str]]:
    check = ShardOwnership()
    for i, rec in enumerate(sim.tracer.records if records is None else records):
        if rec["ev"].startswith(check.prefixes):
            check.feed(rec, f"record {i}")
    v = check.verdict()
    return check, [x.text if hasattr(x, "text") else str(x) for x in v.violations]


@pytest.mark.parametrize("seed", [3, 4, 7])
def test_no_shard_is_served_by_two_nodes_under_faults(seed):
    sim, wl = make(seed=seed, nodes=10, shards=300, duration=150.0)
    nemesis(sim, wl, KINDS, until=110.0)
    sim.run_until(150.0)
    result = wl.finish(sim)
    assert result["violations"] == []
    check, violations = audit(sim)
    assert violations == []
    assert check.acquires >= 10 and check.releases >= 1  # it really moved shards


def test_a_paused_holder_releases_what_moved_as_it_resumes_and_the_audit_checks_it():
    """A holder paused past the map change that moves its shards: the others take
    them over while it is frozen, and it releases them in its first step after
    resuming. Control: the same trace without that release is reported, so the
    check can fail."""
    sim, wl = make(seed=1, nodes=5, shards=100, duration=40.0)
    sim.run_until(10.0)
    victim = next(n for n in wl.names if n != "n1" and sim.app(n).coord.owned)
    sim.pause(victim)
    sim.run_until(20.0)
    sim.resume(victim)
    sim.run_until(30.0)
    records = sim.tracer.records
    resumed = next(r["t"] for r in records if r["ev"] == "sim.resume")
    moved = [r for r in records if r["ev"] == "shard.acquire" and r["node"] != victim
             and r["t"] < resumed and r["t"] > 10.0]
    assert moved  # its shards really were taken over while it was paused
    _check, violations = audit(sim)
    assert violations == []
    released = [r for r in records if r["ev"] == "shard.release" and r["node"] == victim
                and r["t"] == resumed]
    assert released
    _check, violations = audit(sim, [r for r in records if not any(r is x for x in released)])
    assert violations and victim in violations[0]


@pytest.mark.parametrize("seed", [5, 6])
def test_a_live_holder_dropped_by_a_false_gossip_death_releases_before_the_commit(seed):
    """Left-out holder rule: gossip declares a live holder dead (its gossip port is
    mute) while it still hears the Raft leader, late (80 ms links from the leader).
    The leader drops it from Raft and from the next map; the commit waits until the
    holder's lease has run out (or its ack of the proposal), so nobody acquires its
    shards while it may still serve them. The old rule committed at once: the audit
    found 4 overlaps on seed 5."""
    sim, wl = make(seed=seed, nodes=5, shards=100, duration=40.0)
    sim.run_until(10.0)
    lead = next(n for n in wl.names if sim.app(n).raft.role == "leader")
    x = next(n for n in wl.names if n != lead and sim.app(n).coord.owned)
    ep = sim.app(x).gossip_driver.transport
    ep.send_datagram = lambda dest, data: None  # mute gossip: the others declare x dead
    ep.send_frame = lambda dest, data: None
    sim.set_link(lead, x, LinkConfig(latency=0.08, jitter=0.0))
    sim.run_until(40.0)
    c = sim.app(lead).coord
    assert x not in c.committed.nodes  # it really was dropped, its shards moved
    moved = [r for r in sim.tracer.records if r["ev"] == "shard.acquire" and r["t"] > 10.0]
    assert moved
    _check, violations = audit(sim)
    assert violations == []
    assert c.stats.get("commits held for a left-out holder", 0) >= 1
