"""The tracer writes each record as the documented JSON text (docs/trace.md): the
same text as ``json.dumps`` with the tracer's settings, whichever encoder path it
takes, and the same refusal of values JSON cannot carry."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk import trace
from clusterfunk.trace import Tracer


def _reference(rec: dict[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12,
)
_fields = st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=6)


def _tracer(t: float) -> tuple[Tracer, io.StringIO]:
    out = io.StringIO()
    return Tracer(lambda: t, out=out), out


@settings(max_examples=300, deadline=None)
@given(t=st.floats(min_value=0, max_value=1e6), node=st.text(max_size=8),
       ev=st.text(min_size=1, max_size=12), fields=_fields)
def test_a_record_is_written_as_json_dumps_writes_it(
    t: float, node: str, ev: str, fields: dict[str, Any]
) -> None:
    tracer, out = _tracer(t)
    tracer.emit(node, ev, fields)
    tracer.emit(node, ev, fields)  # the second at the same instant (rounded once)
    expected = {"t": round(t, 6), "node": node, "ev": ev}
    expected.update(fields)
    line = _reference(expected) + "\n"
    assert out.getvalue() == line + line


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {1, 2}, b"bytes"])
def test_values_json_cannot_carry_are_refused_as_by_json_dumps(bad: object) -> None:
    tracer, out = _tracer(1.0)
    with pytest.raises((ValueError, TypeError)) as ours:
        tracer.emit("n1", "x.y", {"v": bad})
    with pytest.raises((ValueError, TypeError)) as ref:
        _reference({"v": bad})
    assert type(ours.value) is type(ref.value)
    assert out.getvalue() == ""


def test_without_the_c_accelerator_the_text_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where CPython's C encoder is missing, the public encoder writes the same text."""
    fields: dict[str, Any] = {"name": "n\u00e9\"1", "inc": 3, "coords": [0.5, -1e-7],
                              "tags": {"role": "db", "z": None}, "ok": True}
    fast, fast_out = _tracer(12.3456789)
    fast.emit("n1", "gossip.member", fields)
    monkeypatch.setattr(trace, "_ENCODE_C", None)
    slow, slow_out = _tracer(12.3456789)
    slow.emit("n1", "gossip.member", fields)
    assert slow_out.getvalue() == fast_out.getvalue()
    assert json.loads(slow_out.getvalue()) == {"t": 12.345679, "node": "n1",
                                               "ev": "gossip.member", **fields}
    with pytest.raises(ValueError):
        slow.emit("n1", "x.y", {"v": math.nan})
