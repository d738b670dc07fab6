"""Hypothesis strategies shared by the sharding tests."""

from __future__ import annotations

from hypothesis import strategies as st

#: A small pool of node ids, with non-ASCII ones (sorting is by code point).
POOL = ["a", "b", "c", "node-1", "node-10", "node-2", "zeta", "é-node", "ノード"]

node_sets = st.frozensets(st.sampled_from(POOL), max_size=len(POOL))

weights = st.one_of(
    st.integers(min_value=1, max_value=80),
    st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=80),
    st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=40),
    st.lists(
        st.floats(min_value=0.25, max_value=8.0, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=80,
    ),
)

histories = st.lists(node_sets, min_size=1, max_size=8)


@st.composite
def single_changes(draw: st.DrawFn) -> tuple[frozenset[str], frozenset[str]]:
    """A non-empty node set and a pure join or pure leave of it."""
    before = draw(node_sets.filter(bool))
    if draw(st.booleans()) and len(before) > 1:
        leaving = draw(st.frozensets(st.sampled_from(sorted(before)), min_size=1))
        after = before - leaving
        if not after:
            after = frozenset([min(before)])
    else:
        rest = sorted(set(POOL) - before)
        if not rest:
            return before, before - {min(before)}
        after = before | draw(st.frozensets(st.sampled_from(rest), min_size=1))
    return before, after
