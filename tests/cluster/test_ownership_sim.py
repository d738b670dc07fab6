"""Exclusive ownership in simulation, judged from the trace by the offline audit's
ownership check (``clusterfunk.audit.shards.ShardOwnership``): no ``shard.acquire``
of a shard another node still serves. Faults: every nemesis kind except ``pause``
(a paused node cannot release; see docs/cluster.md, "Where it does not hold")."""

from __future__ import annotations

import pytest

from clusterfunk.audit.shards import ShardOwnership

from .helpers import make, nemesis

KINDS = ("partition", "crash", "loss", "duplicate", "reorder", "skew")


def audit(sim) -> tuple[ShardOwnership, list[str]]:
    check = ShardOwnership()
    for i, rec in enumerate(sim.tracer.records):
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


def test_the_audit_sees_a_paused_holder_whose_shards_moved():
    """Control: with the holder paused past the map change, the same audit reports
    the overlap (the documented limit of the lease), so the check above can fail."""
    sim, wl = make(seed=1, nodes=5, shards=100, duration=30.0)
    sim.run_until(10.0)
    victim = next(n for n in wl.names if n != "n1" and sim.app(n).coord.owned)
    sim.pause(victim)
    sim.run_until(20.0)
    _check, violations = audit(sim)
    assert violations and victim in violations[0]
