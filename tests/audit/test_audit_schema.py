"""The schema check's fast path accepts exactly what the full check accepts."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.audit.schema import EVENTS, _problem, problem

VALUES = st.one_of(
    st.integers(-3, 3), st.booleans(), st.none(),
    st.sampled_from([0.5, math.inf, -math.inf, math.nan, 1e300]),
    st.sampled_from(["", "leader", "dead", "ok", "committed", "get", "x"]),
    st.lists(st.integers(0, 3), max_size=3), st.lists(st.text(max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=1), st.integers(), max_size=1),
)


@st.composite
def records(draw: Any) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(VALUES)
    ev = draw(st.sampled_from([*EVENTS, "nodot", "new.event"]))
    rec: dict[str, Any] = {}
    for name in ("t", "node", "ev"):
        if draw(st.integers(0, 10)) == 0:
            continue  # missing
        good = {"t": draw(st.sampled_from([0, 1.25, 7])), "node": "n1", "ev": ev}[name]
        rec[name] = draw(VALUES) if draw(st.integers(0, 6)) == 0 else good
    for name, kind, values in EVENTS.get(ev, ()):
        roll = draw(st.integers(0, 8))
        if roll == 0:
            continue
        if roll == 1 or kind == "any":
            rec[name] = draw(VALUES)
        elif values is not None:
            rec[name] = draw(st.sampled_from(values))
        else:
            rec[name] = {"int": 3, "number": 2.5, "string": "s", "list": [1, 2],
                         "bool": True}[kind]
    return rec


@settings(max_examples=300, deadline=None)
@given(records())
def test_fast_path_agrees_with_the_full_check(rec: Any) -> None:
    assert (problem(rec) is None) == (_problem(rec) is None), (problem(rec), _problem(rec))
    if problem(rec) is not None:
        assert problem(rec) == _problem(rec)
