"""Delta push-pull replies (``GossipCore._reply_state``): the answer leaves out what
the initiator already holds, and merging it changes the initiator's view exactly as
merging the full state would (same table, same trace records, same events)."""

from __future__ import annotations

import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.messages import PushPull
from tests.gossip.views import core, view


def outcome(c: GossipCore) -> tuple[object, ...]:
    out = c.drain()
    table = sorted((r.name, r.incarnation, str(r.status)) for r in c.table.by_name.values())
    if out is None:
        return (table, [], [])
    return (table, out.trace, out.events)


@settings(max_examples=150, deadline=None)
@given(view, view, st.integers(0, 2**16))
def test_merging_the_delta_reply_equals_merging_the_full_state(
    mine: dict[str, tuple[int, str]], theirs: dict[str, tuple[int, str]], seed: int
) -> None:
    a = core("a", mine, seed)  # the initiator
    b = core("b", theirs, seed + 1)
    request = a._local_state(False, False)
    full = b._local_state(False, True)  # (b merges the request after answering it)
    b.on_message(1.0, a.addr, request, True)
    replies = [s.msg for s in b.drain().sends if type(s.msg) is PushPull]
    assert len(replies) == 1 and replies[0].reply
    delta = replies[0]
    assert {e.name for e in delta.members} <= {e.name for e in full.members}
    with_delta, with_full = a, copy.deepcopy(a)
    with_delta.on_message(2.0, b.addr, delta, True)
    with_full.on_message(2.0, b.addr, full, True)
    assert outcome(with_delta) == outcome(with_full)


def test_members_that_agree_exchange_one_state() -> None:
    same = {f"m{i}": (1, "alive") for i in range(20)}
    a = core("a", {**same, "b": (0, "alive")}, 1)
    b = core("b", {**same, "a": (0, "alive")}, 2)
    b.on_message(1.0, a.addr, a._local_state(False, False), True)
    (reply,) = [s.msg for s in b.drain().sends if type(s.msg) is PushPull]
    # Nothing the initiator lacks: only its own entry comes back.
    assert [e.name for e in reply.members] == ["a"]
    # A member the initiator holds older, or cannot know is dead, is sent.
    b.table.by_name["m3"].incarnation = 2
    b.table.set_status(b.table.by_name["m5"], "dead", 1.0)
    b.table.touch(b.table.by_name["m3"])
    b.table.touch(b.table.by_name["m5"])
    b.on_message(1.5, a.addr, a._local_state(False, False), True)
    (reply,) = [s.msg for s in b.drain().sends if type(s.msg) is PushPull]
    assert sorted(e.name for e in reply.members) == ["a", "m3", "m5"]


def test_a_join_reply_is_the_whole_state() -> None:
    b = core("b", {f"m{i}": (i % 3, "alive") for i in range(10)}, 2)
    joiner = GossipCore("j", "j:7946", random.Random(3))
    joiner.start(0.0)
    full = b._local_state(True, True)
    b.on_message(1.0, joiner.addr, joiner._local_state(True, False), True)
    (reply,) = [s.msg for s in b.drain().sends if type(s.msg) is PushPull]
    assert reply.members == full.members
