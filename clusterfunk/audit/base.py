"""What every audit check shares: the violation record, the verdict, the base class."""

from __future__ import annotations

from typing import Any

import attrs

Record = dict[str, Any]

#: Verdicts of one check.
OK = "ok"
VIOLATED = "violated"
NOT_APPLICABLE = "n/a"  # the trace has none of the events the check reads
UNDECIDED = "undecided"  # the check ran out of budget (linearizability search)


@attrs.frozen
class Violation:
    """One broken property, where it shows in the trace."""

    check: str
    t: float
    where: str  # ``path:line`` of the record that shows it
    text: str
    nodes: tuple[str, ...] = ()  # nodes involved (the viewer highlights their lanes)

    def line(self) -> str:
        return f"t={fmt_t(self.t)} [{self.check}] {self.text} ({self.where})"

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check, "t": self.t, "where": self.where, "text": self.text,
            "nodes": list(self.nodes),
        }


@attrs.frozen
class Verdict:
    """The outcome of one check over a whole trace."""

    check: str
    status: str  # OK, VIOLATED, NOT_APPLICABLE, UNDECIDED
    summary: str  # what was checked, in numbers (or why it did not apply)
    violations: list[Violation] = attrs.Factory(list)
    count: int = 0  # all violations found (``violations`` keeps the first ``limit``)


class Check:
    """A property checked over a trace, one record at a time, in trace order.

    Subclasses set :attr:`name` and :attr:`prefixes` (the event names or
    ``area.`` prefixes they read; the runner only feeds those) and implement
    :meth:`feed` and :meth:`verdict`.
    """

    name = ""
    prefixes: tuple[str, ...] = ()

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.violations: list[Violation] = []
        self.count = 0

    def violation(self, rec: Record, where: str, text: str, *nodes: str) -> None:
        self.count += 1
        if len(self.violations) < self.limit:
            self.violations.append(Violation(self.name, rec["t"], where, text, tuple(nodes)))

    def feed(self, rec: Record, where: str) -> None:
        raise NotImplementedError

    def verdict(self) -> Verdict:
        raise NotImplementedError

    def _done(self, applicable: bool, summary: str, undecided: bool = False) -> Verdict:
        if self.count:
            status = VIOLATED
        elif not applicable:
            status = NOT_APPLICABLE
        elif undecided:
            status = UNDECIDED
        else:
            status = OK
        return Verdict(self.name, status, summary, list(self.violations), self.count)


def fmt_t(t: float) -> str:
    """A trace time for people: seconds to the microsecond, no trailing zeros."""
    return f"{t:.6f}".rstrip("0").rstrip(".")


def member_name(member: str) -> str:
    """Gossip member names are node names; tolerate ``host:port`` forms."""
    return member.partition(":")[0]
