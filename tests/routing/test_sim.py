"""Routing in simulation: the node assembly that ships, a counter service on every
member, simulated routing clients, and a reshard (a crash, then the node back)
while requests run. Judged from the trace."""

from __future__ import annotations

from typing import Any

from .helpers import make


def served_by_owner(records: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Every ``app.request`` answered ``ok`` came from a node holding the shard at
    that instant (between its ``shard.acquire`` and ``shard.release``; a crash ends
    every holding of the node). Returns (ok answers checked, violations)."""
    held: dict[str, set[int]] = {}
    checked, bad = 0, []
    for r in records:
        ev = r["ev"]
        if ev == "shard.acquire":
            held.setdefault(r["node"], set()).update(r["shards"])
        elif ev == "shard.release":
            held.setdefault(r["node"], set()).difference_update(r["shards"])
        elif ev == "sim.crash":
            held.pop(r["target"], None)
        elif ev == "app.request" and r["outcome"] == "ok":
            checked += 1
            if r["shard"] not in held.get(r["node"], set()):
                bad.append(f"t={r['t']}: {r['node']} answered ok for shard {r['shard']}")
    return checked, bad


def test_requests_during_a_crash_and_a_rejoin_are_served_by_owners_only():
    sim, wl, clients, done = make(seed=2, nodes=4, shards=60, clients=2)
    sim.run_until(6.0)
    keys = list(range(40))
    sent: dict[tuple[str, int], tuple[float, float, int]] = {}  # (client, id) -> t, timeout, key

    def tick(c: int, i: int) -> None:
        client = clients[c]
        key = keys[i % len(keys)]
        rid = client.request(key, b"inc", 2.0)
        sent[(f"c{c + 1}", rid)] = (sim.now, 2.0, key)
        if sim.now < 40.0:
            sim.after(0.05, tick, c, i + 1)

    for c in range(2):
        sim.at(6.0 + c * 0.01, tick, c, c * 7)
    owned_by_n4 = set(sim.app("n4").coord.owned)
    sim.at(12.0, sim.crash, "n4")
    sim.at(22.0, sim.restart, "n4")
    sim.run_until(46.0)
    records = sim.tracer.records

    checked, bad = served_by_owner(records)
    assert bad == []
    assert checked > 500
    # every request ended: ok, or failed only once its deadline passed
    assert len(done) == len(sent)
    failed = [f for _c, f in done if not f.ok]
    assert all(f.latency >= 2.0 - 1e-9 and f.outcome in ("timeout", "moved", "busy")
               for f in failed)
    assert len(failed) < len(done) // 10  # the crash costs the requests it caught
    # the reshards really re-routed: stale clients were told "moved" and retried
    assert sum(c.stats["moved"] for c in clients) > 0
    assert sum(c.stats["retries"] for c in clients) > 0
    # handoff: n4's shards came back to it from live owners, with their state
    handoffs = [r for r in records if r["ev"] == "app.handoff" and r["to"] == "n4"]
    assert handoffs and any(r["bytes"] > 0 for r in handoffs)
    svc = wl.services["n4"]  # the restarted incarnation's service
    assert any(state for _shards, state in svc.acquired)
    # no acknowledged increment lost for keys that never lived on the crashed node:
    # the values a key returned, in the order they were answered, only grow
    answers = sorted((sent[(c, f.id)][0] + f.latency, sent[(c, f.id)][2], int(f.payload))
                     for c, f in done if f.ok)
    last: dict[int, int] = {}
    for _t, key, value in answers:
        if key % 60 in owned_by_n4:
            continue
        assert value > last.get(key, 0), f"key {key}: {value} after {last.get(key)}"
        last[key] = value
    assert len(last) > 20
