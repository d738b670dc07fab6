"""Run every audit check over a trace in one pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from clusterfunk.audit.base import (
    NOT_APPLICABLE,
    UNDECIDED,
    VIOLATED,
    Check,
    Record,
    Verdict,
    fmt_t,
)
from clusterfunk.audit.gossip import FalsePositives
from clusterfunk.audit.kv import Linearizability
from clusterfunk.audit.raft import ApplyOrder, ElectionSafety, StateMachineSafety
from clusterfunk.audit.reader import MalformedTrace
from clusterfunk.audit.shards import ShardMapAgreement, ShardOwnership


@attrs.define
class Options:
    limit: int = 100  # violations kept per check (all are counted)
    grace: float | None = None  # gossip false-positive grace (default: profile bound)
    gossip_profile: str = "lan"
    max_steps_per_key: int = 2_000_000


def make_checks(opts: Options | None = None) -> list[Check]:
    o = opts or Options()
    return [
        ElectionSafety(o.limit),
        StateMachineSafety(o.limit),
        ApplyOrder(o.limit),
        Linearizability(o.limit, o.max_steps_per_key),
        ShardMapAgreement(o.limit),
        ShardOwnership(o.limit),
        FalsePositives(o.limit, grace=o.grace, profile=o.gossip_profile),
    ]


@attrs.define
class Report:
    verdicts: list[Verdict]
    records: int
    nodes: list[str]
    t0: float | None
    t1: float | None
    simulation: dict[str, Any] | None  # the sim.start record, if any

    @property
    def violations(self) -> int:
        return sum(v.count for v in self.verdicts)

    @property
    def undecided(self) -> bool:
        return any(v.status == UNDECIDED for v in self.verdicts)

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "nodes": self.nodes,
            "t0": self.t0,
            "t1": self.t1,
            "seed": self.simulation.get("seed") if self.simulation else None,
            "verdict": "fail" if self.violations else "ok",
            "violations": self.violations,
            "checks": [
                {
                    "check": v.check, "status": v.status, "summary": v.summary,
                    "count": v.count, "violations": [x.as_json() for x in v.violations],
                }
                for v in self.verdicts
            ],
        }


class Auditor:
    """Feed records in trace order (:meth:`feed`), then :meth:`report`."""

    def __init__(self, opts: Options | None = None) -> None:
        self.checks = make_checks(opts)
        self._routes: dict[str, list[Check]] = {}
        self.records = 0
        self.nodes: dict[str, None] = {}  # server ids in order of appearance
        self.clients: set[str] = set()
        self.t0: float | None = None
        self.t1: float | None = None
        self.sim_start: Record | None = None
        self.sim_end = False
        self.last_where = ""

    def _route(self, ev: str) -> list[Check]:
        r = self._routes.get(ev)
        if r is None:
            r = [c for c in self.checks if any(ev.startswith(p) for p in c.prefixes)]
            self._routes[ev] = r
        return r

    def feed(self, rec: Record, where: str) -> None:
        self.records += 1
        t = rec["t"]
        if self.t0 is None:
            self.t0 = t
        self.t1 = t
        ev = rec["ev"]
        node = rec["node"]
        self.last_where = where
        if ev == "sim.start":
            self.sim_start = rec
            for n in rec["nodes"]:
                self.nodes.setdefault(n, None)
        elif ev == "sim.end":
            self.sim_end = True
        elif ev == "sim.add":
            self.nodes.setdefault(rec["target"], None)
        elif ev.startswith(("kv.", "client.")):  # client ids are not servers
            self.clients.add(node)
        elif node != "sim" and node not in self.nodes:
            self.nodes[node] = None
        for c in self._route(ev):
            c.feed(rec, where)

    def complete(self, label: str = "trace") -> None:
        """Raise :class:`MalformedTrace` for a trace that is empty, or a simulation
        trace that stops before its ``sim.end`` (the run died or the file was cut)."""
        if not self.records:
            raise MalformedTrace(label, "no records (empty file)")
        if self.sim_start is not None and not self.sim_end:
            raise MalformedTrace(
                self.last_where, "the simulation trace ends without sim.end (cut short?)"
            )

    def report(self) -> Report:
        return Report(
            [c.verdict() for c in self.checks],
            self.records,
            [n for n in self.nodes if n not in self.clients],
            self.t0,
            self.t1,
            self.sim_start,
        )


def audit(
    records: Iterable[tuple[Record, str]],
    opts: Options | None = None,
    *,
    complete: bool = True,
    label: str = "trace",
) -> Report:
    """Audit ``(record, where)`` pairs (see :func:`clusterfunk.audit.reader.read`).

    With ``complete`` (the default), an empty trace or a simulation trace without
    its ``sim.end`` raises :class:`MalformedTrace`."""
    a = Auditor(opts)
    for rec, where in records:
        a.feed(rec, where)
    if complete:
        a.complete(label)
    return a.report()


def format_report(report: Report, names: list[str]) -> str:
    """The human-readable report (what ``clusterfunk audit`` prints)."""
    lines = []
    span = "empty"
    if report.t0 is not None and report.t1 is not None:
        span = f"t={fmt_t(report.t0)}..{fmt_t(report.t1)} s"
    kind = (
        f"simulation, seed {report.simulation.get('seed')}" if report.simulation
        else "no sim.start: real processes"
    )
    lines.append(
        f"audit {' '.join(names)}: {report.records} records, {len(report.nodes)} nodes, "
        f"{span} ({kind})"
    )
    width = max(len(v.check) for v in report.verdicts)
    for v in report.verdicts:
        status = v.status if v.status != VIOLATED else f"{v.count} violation(s)"
        lines.append(f"  {v.check:<{width}}  {status:<14} {v.summary}")
    bad = [v for v in report.verdicts if v.status == VIOLATED]
    if bad:
        lines.append(f"violations ({report.violations}):")
        for v in bad:
            for x in v.violations:
                lines.append(f"  {x.line()}")
            if v.count > len(v.violations):
                lines.append(f"  ... and {v.count - len(v.violations)} more [{v.check}]")
    else:
        checked = sum(1 for v in report.verdicts if v.status != NOT_APPLICABLE)
        lines.append(f"no violations ({checked} checks applied)")
    return "\n".join(lines)
