"""Raft properties visible in the trace alone (``raft.*``; resets from ``sim.*``).

* **Election Safety** (Raft Figure 3: at most one leader can be elected in a
  given term): every ``raft.role`` record with ``role == "leader"`` claims its
  ``term``; a second node claiming the same term is a violation.
* **State Machine Safety** (if a server has applied a log entry at an index, no
  other server ever applies a different entry there): the first ``raft.apply``
  of each ``index`` fixes its ``(term, digest)``; any later apply of that index
  (by any node, a re-application after a restart included) with another term or
  digest is a violation, and so is a ``raft.snapshot`` whose ``term`` differs from
  the term applied at its ``index``.
* **Apply order** (Figure 2: ``lastApplied`` advances one entry at a time): a
  node applies contiguous indexes in increasing order. The next expected index is
  reset by ``sim.crash`` / ``sim.restart`` of the node (a reboot re-applies from
  its disk: the first apply after it may be any index), and set to ``index + 1``
  by a ``raft.snapshot`` restore. Real processes have no ``sim.*`` events; the
  Raft server appends to its trace across restarts, and every start emits
  ``raft.role`` and ``raft.config`` before any apply (then ``raft.snapshot`` if
  it loaded one). So in a trace without ``sim.start`` an apply that goes *back*
  to index 1 after the node emitted both a ``raft.role`` and a ``raft.config``
  record since its previous apply is taken as the re-application of a reboot;
  any other jump, forward or back, is a violation.
"""

from __future__ import annotations

from clusterfunk.audit.base import Check, Record, Verdict


class ElectionSafety(Check):
    """At most one leader per term (``raft.role``)."""

    name = "election safety"
    prefixes = ("raft.role",)

    def __init__(self, limit: int = 100) -> None:
        super().__init__(limit)
        self.leaders: dict[int, tuple[str, str]] = {}  # term -> (node, where)
        self.roles = 0

    def feed(self, rec: Record, where: str) -> None:
        self.roles += 1
        if rec["role"] != "leader":
            return
        term, node = rec["term"], rec["node"]
        first = self.leaders.get(term)
        if first is None:
            self.leaders[term] = (node, where)
        elif first[0] != node:
            self.violation(
                rec, where,
                f"{node} and {first[0]} are both leaders of term {term} "
                f"({first[0]} at {first[1]})",
                node, first[0],
            )

    def verdict(self) -> Verdict:
        return self._done(
            self.roles > 0,
            f"{self.roles} raft.role records, leaders in {len(self.leaders)} term(s)"
            if self.roles else "no raft.role events",
        )


class StateMachineSafety(Check):
    """No two servers apply different entries at one index (``raft.apply``, ``raft.snapshot``)."""

    name = "state machine safety"
    prefixes = ("raft.apply", "raft.snapshot")

    def __init__(self, limit: int = 100) -> None:
        super().__init__(limit)
        # index -> (term, digest, node, where) of its first apply
        self.applied: dict[int, tuple[int, str, str, str]] = {}
        self.applies = 0
        self.snapshots = 0

    def feed(self, rec: Record, where: str) -> None:
        node, index, term = rec["node"], rec["index"], rec["term"]
        first = self.applied.get(index)
        if rec["ev"] == "raft.snapshot":
            self.snapshots += 1
            if first is not None and first[0] != term:
                self.violation(
                    rec, where,
                    f"{node} restored a snapshot at index {index} term {term}, but "
                    f"{first[2]} applied term {first[0]} there ({first[3]})",
                    node, first[2],
                )
            return
        self.applies += 1
        digest = rec["digest"]
        if first is None:
            self.applied[index] = (term, digest, node, where)
        elif first[0] != term or first[1] != digest:
            self.violation(
                rec, where,
                f"{node} applied index {index} as term {term} digest {digest}, but "
                f"{first[2]} applied term {first[0]} digest {first[1]} ({first[3]})",
                node, first[2],
            )

    def verdict(self) -> Verdict:
        return self._done(
            self.applies + self.snapshots > 0,
            f"{self.applies} applies at {len(self.applied)} indexes, "
            f"{self.snapshots} snapshot restores"
            if self.applies + self.snapshots else "no raft.apply events",
        )


class ApplyOrder(Check):
    """Each node applies contiguous indexes in order (see the module docstring)."""

    name = "apply order"
    prefixes = ("raft.", "sim.start", "sim.crash", "sim.restart")

    def __init__(self, limit: int = 100) -> None:
        super().__init__(limit)
        self.simulation = False
        self.next: dict[str, int | None] = {}
        # production reboot signature since the node's previous apply
        self.saw_role: set[str] = set()
        self.saw_config: set[str] = set()
        self.resets = 0
        self.reboots = 0
        self.applies = 0

    def feed(self, rec: Record, where: str) -> None:
        ev = rec["ev"]
        if ev == "raft.apply":
            self._apply(rec, where)
        elif ev == "raft.snapshot":
            self.next[rec["node"]] = rec["index"] + 1
        elif ev == "raft.role":
            self.saw_role.add(rec["node"])
        elif ev == "raft.config":
            self.saw_config.add(rec["node"])
        elif ev == "sim.start":
            self.simulation = True
        elif ev in ("sim.crash", "sim.restart"):
            self.resets += 1
            self.next[rec["target"]] = None

    def _apply(self, rec: Record, where: str) -> None:
        node, index = rec["node"], rec["index"]
        self.applies += 1
        expect = self.next.get(node)
        rebooted = node in self.saw_role and node in self.saw_config
        self.saw_role.discard(node)
        self.saw_config.discard(node)
        if expect is not None and index != expect:
            if not self.simulation and rebooted and index == 1 and expect > 1:
                self.reboots += 1
            else:
                self.violation(
                    rec, where,
                    f"{node} applied index {index} but the next in order was {expect}",
                    node,
                )
        self.next[node] = index + 1

    def verdict(self) -> Verdict:
        extra = (
            f", {self.resets} crash/restart resets" if self.simulation
            else f", {self.reboots} process reboots recognised"
        )
        return self._done(
            self.applies > 0,
            f"{self.applies} applies on {len(self.next)} nodes{extra}"
            if self.applies else "no raft.apply events",
        )
