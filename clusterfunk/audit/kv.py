"""Linearizability of the KV history (``kv.call`` / ``kv.return``).

Exactly the procedure of ``docs/trace.md``: pair each client's ``kv.call`` with
its next ``kv.return``, drop ``fail``, treat ``unknown`` (and a call still open
at the end) as never returning, and check every key as a register. The search is
the pure Wing & Gong checker the simulation workload uses
(:mod:`clusterfunk.sim.checkers.linearizability`, which imports only ``attrs``;
nothing of the simulator is loaded). A client that calls twice without a return,
or returns without a call, breaks the schema's pairing rule and is reported too.
"""

from __future__ import annotations

from typing import Any

from clusterfunk.audit.base import Check, Record, Verdict
from clusterfunk.sim.checkers import linearizability as lin


class Linearizability(Check):
    """The ``kv.*`` history is linearizable, key by key."""

    name = "linearizability"
    prefixes = ("kv.",)

    def __init__(self, limit: int = 100, max_steps_per_key: int = 2_000_000) -> None:
        super().__init__(limit)
        self.max_steps = max_steps_per_key
        self.builder: Any = lin.HistoryBuilder()
        self.records = 0
        self.last: Record | None = None
        self.where = ""
        self._verdict: Verdict | None = None

    def feed(self, rec: Record, where: str) -> None:
        self.records += 1
        self.last, self.where = rec, where
        errors = len(self.builder.errors)
        self.builder(rec)
        for e in self.builder.errors[errors:]:
            self.violation(rec, where, f"history: {e}", rec["client"])

    def verdict(self) -> Verdict:
        if self._verdict is not None:
            return self._verdict
        if not self.records:
            self._verdict = self._done(False, "no kv.call/kv.return events")
            return self._verdict
        ops = self.builder.history()
        result = lin.check_history(ops, self.max_steps)
        end = self.last if self.last is not None else {"t": 0.0}
        for p in result.problems:
            # The problem text names the key and the longest linearizable prefix.
            self.violation(end, self.where, p.replace("\n", "; "))
        summary = f"{result.ops} operations on {result.keys} keys"
        if result.undecided_keys:
            summary += f"; undecided (search budget) for keys {result.undecided_keys}"
        self._verdict = self._done(True, summary, undecided=bool(result.undecided_keys))
        return self._verdict
