"""A linearizability checker for key-value histories (Wing & Gong, with the
memoisation of Lowe and Porcupine, and P-compositionality by key).

A *history* is a list of :class:`Op`: each has a client, a kind (``get``, ``put``,
``delete``, ``cas``), a key, its arguments, the time it was called and the time it
returned, and an *outcome*:

* ``ok``: it took effect exactly once, with ``result``;
* ``fail``: it certainly did not take effect (dropped from the check);
* ``unknown``: it may or may not have taken effect, at any time after its call
  (a timeout, a lost connection, a client that never heard back). Its return time
  is treated as infinity and its result is unconstrained; an unknown ``get`` has no
  effect and constrains nothing, so it is dropped.

The history is linearizable iff for every key (operations on different keys
commute, so a KV history is linearizable iff each per-key sub-history is) there is
a total order of the ``ok`` operations, plus any subset of the ``unknown`` writes,
that respects real time (an operation that returned before another was called
comes first) and is a legal sequential execution of a single register.

Search (per key): the classic Wing & Gong backtracking over a doubly linked list
of call/return entries in time order: try to linearize any call that precedes the
first pending return; when a return is reached whose call is not linearized,
backtrack. A cache of ``(set of linearized ops as a bitmask, register state)``
prunes states already explored: the remaining search from such a configuration
does not depend on how it was reached. Unknown operations never return, so once
every operation with a finite return time is linearized the rest may simply never
have happened: the search succeeds there.

Timestamps: entries are sorted by time; at equal times calls come before returns,
so operations that touch in time are treated as concurrent (never a false alarm).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

#: Outcomes of a client operation.
OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"

OPS = ("get", "put", "delete", "cas")

#: Marker for "key absent" in the register model (``None`` is the absent value).
ABSENT = None


@attrs.frozen
class Op:
    """One client operation of a KV history."""

    client: str
    op: str
    key: str
    call: float
    ret: float = math.inf
    outcome: str = OK
    value: Any = None
    expected: Any = None
    result: Any = None

    def __attrs_post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown operation {self.op!r}")
        if self.outcome not in (OK, FAIL, UNKNOWN):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.ret < self.call:
            raise ValueError(f"operation returns ({self.ret}) before it is called ({self.call})")


@attrs.frozen
class Result:
    """The verdict. ``ok`` is True (linearizable), False (a counterexample is in
    ``problems``) or None (the search budget ran out for some key: undecided)."""

    ok: bool | None
    problems: list[str] = attrs.Factory(list)
    keys: int = 0
    ops: int = 0
    undecided_keys: list[str] = attrs.Factory(list)


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The sequential specification of one register (one key of the KV store).

    ``get`` returns the value (``None`` when absent); ``put`` stores; ``delete``
    removes; ``cas(expected, value)`` stores ``value`` iff the current value equals
    ``expected`` (``None`` expects absence) and returns whether it did. A boolean
    result of ``delete`` must say whether the key existed; the result of ``put`` is
    not constrained. Unknown operations accept any result.
    """
    known = op.outcome == OK
    kind = op.op
    if kind == "get":
        return (not known or _same(op.result, state)), state
    if kind == "put":
        return True, op.value
    if kind == "delete":
        # The KV store returns whether the key existed; other stores may not say.
        if known and isinstance(op.result, bool) and op.result is not (state is not None):
            return False, state
        return True, ABSENT
    # cas
    hit = _same(state, op.expected)
    if known and _as_bool(op.result) is not hit:
        return False, state
    return True, (op.value if hit else state)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if not (a is None or b is None) else a is b


def _as_bool(r: Any) -> bool | None:
    if isinstance(r, bool):
        return r
    if isinstance(r, dict) and "ok" in r:
        return bool(r["ok"])
    if isinstance(r, (list, tuple)) and r and isinstance(r[0], bool):
        return r[0]
    return None


class _Entry:
    __slots__ = ("is_call", "match", "next", "op", "opid", "prev", "time")

    def __init__(self, is_call: bool, time: float, op: Op | None, opid: int) -> None:
        self.is_call = is_call
        self.time = time
        self.op = op
        self.opid = opid
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _describe(op: Op) -> str:
    args = ""
    if op.op == "put":
        args = f" {op.value!r}"
    elif op.op == "cas":
        args = f" {op.expected!r}->{op.value!r}"
    res = f" -> {op.result!r}" if op.outcome == OK and op.op in ("get", "cas") else ""
    ret = "inf" if op.ret == math.inf else f"{op.ret:g}"
    return f"{op.client} {op.op}({op.key!r}{args}){res} [{op.call:g}, {ret}] {op.outcome}"


def check_key(ops: list[Op], max_steps: int = 2_000_000) -> tuple[bool | None, str]:
    """Check the sub-history of one key. Returns ``(verdict, explanation)``."""
    # Normalise: drop failed ops and unknown reads; unknown writes never return.
    norm: list[Op] = []
    for o in ops:
        if o.outcome == FAIL or (o.outcome == UNKNOWN and o.op == "get"):
            continue
        if o.outcome == UNKNOWN and o.ret != math.inf:
            o = attrs.evolve(o, ret=math.inf)
        norm.append(o)
    if not norm:
        return True, ""
    events: list[tuple[float, int, int, _Entry]] = []
    finite = 0
    for i, o in enumerate(norm):
        c = _Entry(True, o.call, o, i)
        r = _Entry(False, o.ret, o, i)
        c.match = r
        events.append((o.call, 0, i, c))
        events.append((o.ret, 1, i, r))
        if o.ret != math.inf:
            finite += 1
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(False, -math.inf, None, -1)
    prev = head
    for _, _, _, e in events:
        prev.next = e
        e.prev = prev
        prev = e

    def lift(e: _Entry) -> None:
        e.prev.next = e.next  # type: ignore[union-attr]
        if e.next is not None:
            e.next.prev = e.prev
        m = e.match
        assert m is not None
        m.prev.next = m.next  # type: ignore[union-attr]
        if m.next is not None:
            m.next.prev = m.prev

    def unlift(e: _Entry) -> None:
        m = e.match
        assert m is not None
        m.prev.next = m  # type: ignore[union-attr]
        if m.next is not None:
            m.next.prev = m
        e.prev.next = e  # type: ignore[union-attr]
        if e.next is not None:
            e.next.prev = e

    state: Any = ABSENT
    linearized = 0
    remaining_finite = finite
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
    best: list[Op] = []
    best_block: Op | None = None
    entry = head.next
    steps = 0
    while remaining_finite > 0:
        steps += 1
        if steps > max_steps:
            return None, f"search budget of {max_steps} steps exhausted"
        assert entry is not None
        if entry.is_call:
            op = entry.op
            assert op is not None
            ok, new_state = step(state, op)
            if ok:
                new_lin = linearized | (1 << entry.opid)
                key = (new_lin, _hashable(new_state))
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    if op.ret != math.inf:
                        remaining_finite -= 1
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not linearized: nothing earlier can be
            # linearized any more on this path; backtrack.
            if len(stack) > len(best) or best_block is None:
                best = [e.op for e, _ in stack]  # type: ignore[misc]
                best_block = entry.op
            if not stack:
                return False, _counterexample(best, best_block)
            top, state = stack.pop()
            linearized &= ~(1 << top.opid)
            assert top.op is not None
            if top.op.ret != math.inf:
                remaining_finite += 1
            unlift(top)
            entry = top.next
    return True, ""


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def _counterexample(prefix: list[Op], blocked: Op | None) -> str:
    lines = ["longest linearizable prefix:"]
    lines += [f"  {i + 1}. {_describe(o)}" for i, o in enumerate(prefix)] or ["  (empty)"]
    if blocked is not None:
        lines.append(f"cannot be linearized after it: {_describe(blocked)}")
    return "\n".join(lines)


def check_history(ops: Iterable[Op], max_steps_per_key: int = 2_000_000) -> Result:
    """Check a whole KV history, key by key (P-compositionality)."""
    by_key: dict[str, list[Op]] = {}
    n = 0
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
        n += 1
    problems: list[str] = []
    undecided: list[str] = []
    for key in sorted(by_key, key=repr):
        verdict, why = check_key(by_key[key], max_steps_per_key)
        if verdict is False:
            problems.append(f"key {key!r} is not linearizable; {why}")
        elif verdict is None:
            undecided.append(key)
    ok: bool | None = False if problems else (None if undecided else True)
    return Result(ok, problems, len(by_key), n, undecided)


class HistoryBuilder:
    """Pairs ``kv.call`` / ``kv.return`` trace records into :class:`Op` s.

    Each client has at most one operation outstanding, so a return belongs to the
    client's last call. Calls still open at the end become ``unknown``.
    Feed it records (it is a valid ``Tracer.listeners`` callback).
    """

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._open: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    def __call__(self, rec: dict[str, Any]) -> None:
        ev = rec.get("ev")
        if ev == "kv.call":
            client = rec["client"]
            if client in self._open:
                self.errors.append(f"t={rec['t']}: client {client} called twice without return")
            self._open[client] = rec
        elif ev == "kv.return":
            client = rec["client"]
            call = self._open.pop(client, None)
            if call is None:
                self.errors.append(f"t={rec['t']}: client {client} returned without a call")
                return
            self.ops.append(_make_op(call, rec))

    def history(self) -> list[Op]:
        """All paired operations plus the still-open ones as ``unknown``."""
        return self.ops + [_make_op(c, None) for c in self._open.values()]


def _make_op(call: dict[str, Any], ret: dict[str, Any] | None) -> Op:
    return Op(
        client=call["client"],
        op=call["op"],
        key=call["key"],
        call=call["t"],
        ret=ret["t"] if ret is not None else math.inf,
        outcome=ret["outcome"] if ret is not None else UNKNOWN,
        value=call.get("value"),
        expected=call.get("expected"),
        result=ret.get("result") if ret is not None else None,
    )


def history_from_trace(records: Iterable[dict[str, Any]]) -> list[Op]:
    """The KV history recorded in a trace (``kv.call`` / ``kv.return`` records)."""
    b = HistoryBuilder()
    for r in records:
        b(r)
    return b.history()
