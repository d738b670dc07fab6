"""``GossipCore.member_events`` off (the simulated gossip node): the core makes no
membership events, and nothing else changes -- same table, trace records, sends and
other events as a core that makes them, for any view merged from any remote state."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.events import MEMBER_EVENTS, MemberJoined
from tests.gossip.views import core, view


def step_out(c: GossipCore) -> tuple[object, ...]:
    out = c.drain()
    table = sorted((r.name, r.incarnation, str(r.status)) for r in c.table.by_name.values())
    if out is None:
        return (table, [], [], [])
    return (table, out.trace, out.sends, out.events)


@settings(max_examples=100, deadline=None)
@given(view, view, st.integers(0, 2**16))
def test_without_member_events_only_the_events_differ(
    mine: dict[str, tuple[int, str]], theirs: dict[str, tuple[int, str]], seed: int
) -> None:
    on = core("a", mine, seed)
    off = copy.deepcopy(on)
    off.member_events = False
    remote = core("b", theirs, seed + 1)._local_state(False, False)
    on.on_message(1.0, remote.source_addr, remote, True)
    off.on_message(1.0, remote.source_addr, remote, True)
    # ... and a tick that may time suspicions out or reap
    on.on_tick(60.0)
    off.on_tick(60.0)
    table_on, trace_on, sends_on, events_on = step_out(on)
    table_off, trace_off, sends_off, events_off = step_out(off)
    assert (table_off, trace_off, sends_off) == (table_on, trace_on, sends_on)
    assert events_off == [e for e in events_on if type(e) not in MEMBER_EVENTS]


def test_member_events_on_by_default() -> None:
    c = core("a", {}, 1)
    remote = core("b", {"m1": (0, "alive")}, 2)._local_state(False, False)
    c.on_message(1.0, remote.source_addr, remote, True)
    events = step_out(c)[3]
    assert isinstance(events, list)
    assert sorted(e.member.name for e in events if type(e) is MemberJoined) == ["b", "m1"]
