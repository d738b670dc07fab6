"""The dormant gossip timer (memberlist's gossip round, GossipCore._gossip_round): a
round that finds nothing to send arms no next round, and the first update queued
after it re-arms the timer on the same cadence, at the first round time not before
the current input."""

from __future__ import annotations

import random

from clusterfunk.gossip.config import LAN
from clusterfunk.gossip.core import _GOSSIP, GossipCore
from clusterfunk.gossip.messages import Alive


def _gossip_times(c: GossipCore) -> list[float]:
    return sorted(t for t, _s, kind, _k in c._timers if kind == _GOSSIP)


def _run_until_idle(c: GossipCore) -> float:
    """Tick the core until its gossip timer went dormant; return that round's time."""
    for _ in range(10_000):
        c.on_tick(c.next_deadline())
        c.drain()
        if c._gossip_idle is not None:
            return c._gossip_idle
    raise AssertionError("the gossip timer never went dormant")


def test_an_empty_queue_arms_no_gossip_round_and_an_update_re_arms_it() -> None:
    c = GossipCore("a", "a:7946", random.Random(1), LAN, {})
    c.start(0.0)
    assert len(_gossip_times(c)) == 1  # armed at start
    c.on_message(0.01, "b:7946", Alive(1, "b", "b:7946", {}), False)  # one peer
    _run_until_idle(c)
    assert len(c.broadcasts) == 0 and _gossip_times(c) == []
    # time passes (probes, suspicion of the silent peer, ...): after every step, a
    # dormant timer means an empty queue and no gossip round armed, else exactly one
    idle_steps = 0
    for _ in range(300):
        c.on_tick(c.next_deadline())
        c.drain()
        if c._gossip_idle is not None:
            idle_steps += 1
            assert len(c.broadcasts) == 0 and _gossip_times(c) == []
        else:
            assert len(_gossip_times(c)) == 1
    assert idle_steps > 100  # mostly dormant: no wake-ups for empty rounds
    while c._gossip_idle is None:
        c.on_tick(c.next_deadline())
        c.drain()
    idle_at = c._gossip_idle
    c.on_tick(c.next_deadline())  # another timer: time moves on
    c.drain()
    assert c._gossip_idle == idle_at  # still dormant: that step queued nothing
    now = c._now + 3 * LAN.gossip_interval
    # an update arrives: the round is re-armed on the old cadence, not before now
    c.on_message(now, "c:7946", Alive(1, "c", "c:7946", {}), False)
    (t,) = _gossip_times(c)
    assert now <= t < now + LAN.gossip_interval
    k = round((t - idle_at) / LAN.gossip_interval)
    assert abs(t - (idle_at + k * LAN.gossip_interval)) < 1e-9
    # that round gossips the update and keeps the timer armed
    c.on_tick(t)
    out = c.drain()
    assert out is not None and out.sends
    assert _gossip_times(c) == [t + LAN.gossip_interval]
