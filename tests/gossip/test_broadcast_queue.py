"""The transmit-limited broadcast queue."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.gossip.broadcast import PART_OVERHEAD, BroadcastQueue


def test_least_transmitted_first_and_newest_first_among_equals():
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("m:a", b"a" * 10)
    assert q.get(1000, 5) == [b"a" * 10]  # a: 1 transmit
    q.queue("m:b", b"b" * 10)
    q.queue("m:c", b"c" * 10)
    # b and c have 0 transmits: they come first, newest (c) first, then a.
    assert q.get(1000, 5) == [b"c" * 10, b"b" * 10, b"a" * 10]
    assert q.transmits("m:a") == 2 and q.transmits("m:b") == 1


def test_newer_update_replaces_older_whatever_its_transmits():
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("m:n1", b"old")
    q.get(100, 5)
    q.get(100, 5)
    q.queue("m:n1", b"new")
    assert len(q) == 1
    assert q.transmits("m:n1") == 0
    assert q.get(100, 5) == [b"new"]


def test_retransmit_limit_drops_after_limit():
    q = BroadcastQueue(retransmit_mult=2)
    q.queue("m:x", b"x")
    # n = 5: limit = 2 * ceil(log10 6) = 2
    assert q.get(100, 5) == [b"x"]
    assert q.get(100, 5) == [b"x"]
    assert q.get(100, 5) == []
    assert len(q) == 0
    q.queue("m:y", b"y")
    # n = 50: limit 4
    assert sum(len(q.get(100, 50)) for _ in range(10)) == 4


def test_budget_skips_large_items_but_packs_smaller_ones():
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("m:small", b"s" * 10)
    q.queue("m:big", b"b" * 200)
    got = q.get(100, 5)
    assert got == [b"s" * 10]
    assert q.transmits("m:big") == 0


def test_max_items_drops_most_transmitted_oldest():
    q = BroadcastQueue(retransmit_mult=4, max_items=3)
    q.queue("m:a", b"a")
    q.get(100, 1000)
    q.queue("m:b", b"b")
    q.queue("m:c", b"c")
    q.queue("m:d", b"d")
    assert len(q) == 3 and "m:a" not in q and q.dropped == 1


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 15), st.integers(1, 120)), min_size=1, max_size=60),
    st.integers(0, 1400),
    st.integers(1, 2000),
)
def test_packing_respects_budget_and_limit(items, budget, n):
    q = BroadcastQueue(retransmit_mult=3)
    for key, size in items:
        q.queue(f"m:{key}", bytes([key]) * size)
    keys = {f"m:{k}" for k, _ in items}
    assert len(q) == len(keys)  # one per key
    sent: dict[bytes, int] = {}
    for _ in range(100):
        got = q.get(budget, n)
        assert sum(len(p) + PART_OVERHEAD for p in got) <= budget
        for p in got:
            sent[p] = sent.get(p, 0) + 1
        if not got:
            break
    from clusterfunk.gossip.config import retransmit_limit

    assert all(c <= retransmit_limit(3, n) for c in sent.values())
    # only the latest data per key is ever sent
    latest = {}
    for key, size in items:
        latest[key] = bytes([key]) * size
    assert set(sent) <= set(latest.values())


def test_each_transmission_goes_to_a_different_destination():
    q = BroadcastQueue(retransmit_mult=2)  # n = 3: limit 2
    q.queue("q:1", b"query")
    assert q.get(100, 3, "n2:7946", peers=2) == [b"query"]
    assert q.get(100, 3, "n2:7946", peers=2) == []  # n2 has it: kept for someone else
    assert q.transmits("q:1") == 1
    assert q.get(100, 3, "n3:7946", peers=2) == [b"query"]
    assert len(q) == 0  # limit reached, and both other members have it


def test_a_single_peer_gets_every_transmission():
    q = BroadcastQueue(retransmit_mult=4)  # n = 2: limit 4
    q.queue("m:s", b"suspect")
    for _ in range(4):  # repetition is what beats loss when there is nobody else
        assert q.get(100, 2, "n2:7946", peers=1) == [b"suspect"]
    assert len(q) == 0
