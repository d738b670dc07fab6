"""Majority math (property tests) and Progress bookkeeping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft.progress import PROBE, REPLICATE, Progress
from clusterfunk.raft.quorum import has_quorum, quorum_index, quorum_size


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=9))
def test_quorum_index_is_largest_value_held_by_a_majority(matches):
    n = quorum_index(matches)
    q = quorum_size(len(matches))
    assert sum(1 for m in matches if m >= n) >= q
    assert sum(1 for m in matches if m >= n + 1) < q


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 15), st.data())
def test_two_majorities_intersect(n, data):
    a = data.draw(st.sets(st.integers(0, n - 1), min_size=quorum_size(n)))
    b = data.draw(st.sets(st.integers(0, n - 1), min_size=quorum_size(n)))
    assert a & b
    assert has_quorum(len(a), n)


def test_quorum_sizes():
    assert [quorum_size(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    assert not has_quorum(1, 0)
    assert quorum_index([]) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), max_size=40), st.integers(1, 8))
def test_progress_inflight_window_is_bounded(batches, window):
    pr = Progress("x:1", 1, window)
    pr.update(0)
    pr.become_replicate()
    last = 0
    for b in batches:
        if pr.paused:
            assert len(pr.inflight) == window
            pr.update(pr.inflight[0])  # acknowledge the oldest
            assert not pr.paused
        last += b
        pr.sent(last)
        assert len(pr.inflight) <= window
        assert pr.match < pr.next == last + 1
    pr.update(last)
    assert not pr.inflight and pr.state == REPLICATE


def test_progress_probe_sends_one_at_a_time():
    pr = Progress("x:1", 5, 4)
    assert pr.state == PROBE and not pr.paused
    pr.sent(7)
    assert pr.paused and pr.next == 5  # probing does not move next
    pr.update(7)
    pr.become_replicate()
    assert pr.next == 8 and not pr.paused
