"""The settle push-pull with a digest (``GossipCore._settle``): request = own entry +
(name, incarnation, status) of every other member; answer = the delta plus the
names the answerer wants; then a one-way push of those entries. Both members end
exactly as after a full push-pull (same table, same trace records in the same
order), and a malformed digest is refused and counted."""

from __future__ import annotations

import copy

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk import wire
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.messages import PushPull
from tests.gossip.views import core, view


def push_pulls(c: GossipCore, trace: list[object]) -> list[PushPull]:
    out = c.drain()
    if out is None:
        return []
    trace.extend(out.trace)
    return [s.msg for s in out.sends if type(s.msg) is PushPull]


def view_of(c: GossipCore) -> list[tuple[str, int, str]]:
    return sorted((r.name, r.incarnation, str(r.status)) for r in c.table.by_name.values())


def over_the_wire(msg: PushPull) -> PushPull:
    decoded = wire.decode(wire.encode(msg))
    assert decoded == msg
    return decoded


@settings(max_examples=200, deadline=None)
@given(view, view, st.integers(0, 2**16))
def test_a_digest_settle_ends_as_a_full_push_pull(
    mine: dict[str, tuple[int, str]], theirs: dict[str, tuple[int, str]], seed: int
) -> None:
    a_full, b_full = core("a", mine, seed), core("b", theirs, seed + 1)
    a_dig, b_dig = copy.deepcopy(a_full), copy.deepcopy(b_full)
    trace_a_full: list[object] = []
    trace_b_full: list[object] = []
    trace_a_dig: list[object] = []
    trace_b_dig: list[object] = []

    # full: request with the whole state, delta answer
    b_full.on_message(1.0, a_full.addr, a_full._local_state(False, False), True)
    (reply,) = push_pulls(b_full, trace_b_full)
    a_full.on_message(2.0, b_full.addr, reply, True)
    assert push_pulls(a_full, trace_a_full) == []

    # digest: request, answer with `want`, one-way push of the wanted entries
    request = over_the_wire(a_dig._digest_state("b", b_dig.addr))
    assert [e.name for e in request.members] == ["a"]
    assert "a" not in request.digest_names
    b_dig.on_message(1.0, a_dig.addr, request, True)
    (answer,) = push_pulls(b_dig, trace_b_dig)
    answer = over_the_wire(answer)
    assert answer.reply and answer.members == reply.members
    a_dig.on_message(2.0, b_dig.addr, answer, True)
    pushes = push_pulls(a_dig, trace_a_dig)
    if answer.want:
        (push,) = pushes
        push = over_the_wire(push)
        assert push.reply and not push.join
        assert [e.name for e in push.members] == [n for n in request.digest_names
                                                  if n in answer.want]
        b_dig.on_message(3.0, a_dig.addr, push, True)
        assert push_pulls(b_dig, trace_b_dig) == []  # a push is not answered
    else:
        assert pushes == []

    assert view_of(a_dig) == view_of(a_full)
    assert view_of(b_dig) == view_of(b_full)
    assert trace_a_dig == trace_a_full
    assert trace_b_dig == trace_b_full


def test_members_that_agree_exchange_two_entries() -> None:
    same = {f"m{i}": (1, "alive") for i in range(30)}
    a = core("a", {**same, "b": (0, "alive")}, 1)
    b = core("b", {**same, "a": (0, "alive")}, 2)
    request = a._digest_state("b", b.addr)
    assert len(request.members) == 1 and len(request.digest_names) == 31
    b.on_message(1.0, a.addr, request, True)
    (answer,) = push_pulls(b, [])
    # Only the initiator's own entry comes back, and only the entry about the
    # answerer itself is wanted (a digest cannot show whether its address or tags
    # differ, which the answerer refutes).
    assert [e.name for e in answer.members] == ["a"] and answer.want == ("b",)
    a.on_message(2.0, b.addr, answer, True)
    (push,) = push_pulls(a, [])
    assert [e.name for e in push.members] == ["b"]
    assert a._digests == {}


def test_a_settle_sends_a_digest() -> None:
    a = core("a", {f"m{i}": (0, "alive") for i in range(5)}, 3)
    a._settle(5.0)
    (request,) = push_pulls(a, [])
    assert not request.reply and len(request.members) == 1
    assert request.digest_names and len(request.digest_incarnations) == 5
    assert request.digest_statuses == "aaaaa"


def test_malformed_digests_are_refused_and_counted() -> None:
    a = core("a", {"m1": (0, "alive"), "m2": (0, "alive")}, 4)
    b = core("b", {"a": (0, "alive")}, 5)
    good = a._digest_state("b", b.addr)
    bad = [
        attrs.evolve(good, digest_incarnations=good.digest_incarnations[:-1]),
        attrs.evolve(good, digest_statuses="ax"),
        attrs.evolve(good, digest_statuses=good.digest_statuses + "a"),
        attrs.evolve(good, reply=True),  # a digest in an answer
        attrs.evolve(a._local_state(False, False), want=("m1",)),  # want in a request
    ]
    for msg in bad:
        before = b.stats["invalid"]
        b.on_message(1.0, a.addr, msg, True)
        assert b.stats["invalid"] == before + 1
        assert push_pulls(b, []) == []
    assert "m1" not in b.table


def test_want_from_a_peer_we_sent_no_digest_is_ignored() -> None:
    a = core("a", {"m1": (0, "alive")}, 6)
    answer = attrs.evolve(core("b", {}, 7)._local_state(False, True), want=("m1",))
    a.on_message(1.0, "b:7946", answer, True)
    assert push_pulls(a, []) == []
