"""Online checkers for the five Raft safety properties (paper, Figure 3).

:class:`SafetyChecker` is a ``Tracer.listeners`` callback: it sees every trace
record as it is written, in the order of the run. Some properties are visible in
the audit events alone; the others are about the *logs*, which are not traced
entry by entry, so the checker also inspects the nodes' logs through a
:data:`LogReader` (in the simulator: read from the live ``RaftCore`` objects via
``sim.app(name)``) at the moments that matter and at periodic check points.

How each property is checked
----------------------------

* **Election Safety** (at most one leader per term): every ``raft.role`` record
  with ``role == "leader"`` claims its ``term``; a second node claiming the same
  term is a violation. Trace events only.

* **State Machine Safety** (no two servers apply different entries at one
  index): every ``raft.apply`` (``index``, ``term``, ``digest``) is compared with
  the first record of that index from any node; a different ``term`` or
  ``digest`` is a violation. A ``raft.snapshot`` restore is compared the same way
  (``term`` at its ``index``). Also per node: applies are in index order and
  contiguous (after a snapshot restore at ``i`` the next is ``i + 1``; a crash,
  ``sim.crash``, resets the node). Trace events only. With the logs: an entry is
  applied only once committed (**Apply Committed Only**, Figure 2: the applied index
  never exceeds the node's commit index when its ``raft.apply`` record arrives; on
  with ``apply_committed=True``, for live views only). Likewise the **Leader Commit
  Rule** (5.4.2, Figure 8): when a leader applies, its commit index is where it was at
  its election or at an entry of its own term; and **Commit Majority** (Figure 2,
  rules for leaders): a majority of its voters hold the entry at its commit index.
  And **Committed Entry Kept** (a consequence of Leader Completeness: every later
  leader holds a committed entry, so no AppendEntries a server accepts conflicts
  with it, and a snapshot that covers it keeps it): once a server's log holds a
  committed entry (the ``(index, term)`` some server applied), it holds it for good
  -- until it crashes (it may lose what it had not synced) or compacts it. Per
  server, the highest committed index seen in its log is checked again, and moved
  up, whenever an index is applied for the first time and at every check point;
  a deposed leader's AppendEntries that a server takes although its term is stale
  overwrites entries it holds beyond its own commit index, which the leader may
  already have committed with that server's acknowledgement.

* **Leader Completeness** (a leader's log holds every entry committed in earlier
  terms): when a node becomes leader (``raft.role`` leader), every entry known to
  be committed (applied by anyone: ``raft.apply``) at an index the new leader has
  not compacted must be in its log with the same term; an index beyond its last
  index means a committed entry is missing. Trace events plus the leader's log.

* **Leader Append-Only** (a leader never overwrites or deletes entries of its own
  log): while a node is leader of term T, at every check point the entry that was
  its last at the previous check point (index, term, content) must still be there,
  and its last index must not have shrunk. Needs the log.

* **Log Matching** (two logs with an entry of the same index and term are
  identical up to that index): at every check point, for every pair of live
  nodes, find the highest index where both logs hold the same term and compare
  all entries at and below it (term and content) down to the first index both
  still hold. Entries at or below both nodes' commit indexes never change, so a
  per-pair watermark keeps each check incremental. Needs the logs.

The log-based checks run when :meth:`SafetyChecker.check_logs` is called (the
simulation workload calls it every ``check_every`` virtual seconds, the stateful
test after every step) and, for Leader Completeness, on each ``raft.role``
leader record if a reader is present. Violations are strings in
:attr:`SafetyChecker.violations` (the first ``limit`` kept; all counted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs


class LogView(Protocol):
    """What the log-based checks need to see of one node's Raft state."""

    @property
    def first_index(self) -> int:
        """The first index still held in the log (after the last compaction)."""
        ...

    @property
    def last_index(self) -> int: ...

    @property
    def commit_index(self) -> int: ...

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (``first_index <= index <= last_index``)."""
        ...

    def content_at(self, index: int) -> Any:
        """Something equal for equal entries (the entry's bytes, or a digest)."""
        ...


#: Returns the log view of a node, or None when the node is down.
LogReader = Callable[[str], LogView | None]


@attrs.define
class _Tenure:
    term: int
    last_index: int
    last_term: int
    last_content: Any


class SafetyChecker:
    """Checks the five safety properties online. See the module docstring."""

    def __init__(
        self,
        nodes: list[str],
        read_log: LogReader | None = None,
        *,
        limit: int = 100,
        apply_committed: bool = False,
    ) -> None:
        self.nodes = list(nodes)
        #: check Apply Committed Only and the Leader Commit Rule (need ``read_log``
        #: views of the live cores)
        self.apply_committed = apply_committed
        self._commit0: dict[str, tuple[int, int]] = {}  # leader -> (term, commit at election)
        self._majority_checked: dict[str, int] = {}  # leader -> commit index last checked
        #: Committed Entry Kept: node -> highest committed index seen in its log
        self._kept: dict[str, int] = {}
        self.read_log = read_log
        self.limit = limit
        self.violations: list[str] = []
        self.violation_count = 0
        self.leaders: dict[int, str] = {}  # term -> node that became leader in it
        self.elections = 0
        self.applied: dict[int, tuple[int, str, str]] = {}  # index -> (term, digest, node)
        self.applies = 0
        self.max_applied = 0
        self._next_apply: dict[str, int | None] = {}
        self._role: dict[str, tuple[str, int]] = {}
        self._tenure: dict[str, _Tenure] = {}
        self._pair_mark: dict[tuple[str, str], int] = {}
        self.log_checks = 0
        self.now = 0.0

    # -- trace records -------------------------------------------------------

    def __call__(self, rec: dict[str, Any]) -> None:
        ev = rec["ev"]
        if ev == "raft.apply":
            self._on_apply(rec)
        elif ev == "raft.role":
            self._on_role(rec)
        elif ev == "raft.snapshot":
            self._on_snapshot(rec)
        elif ev == "sim.crash":
            node = rec["target"]
            self._next_apply[node] = None
            self._role.pop(node, None)
            self._tenure.pop(node, None)
            self._kept.pop(node, None)  # a crash may lose what it had not synced

    def _violation(self, t: float, text: str) -> None:
        self.violation_count += 1
        if len(self.violations) < self.limit:
            self.violations.append(f"t={t}: {text}")

    def _on_role(self, rec: dict[str, Any]) -> None:
        """Election Safety: at most one leader can be elected in a given term."""
        node, term, role = rec["node"], rec["term"], rec["role"]
        self.now = rec["t"]
        self._role[node] = (role, term)
        if role != "leader":
            self._tenure.pop(node, None)
            return
        self.elections += 1
        other = self.leaders.get(term)
        if other is not None and other != node:
            self._violation(
                rec["t"], f"Election Safety: {node} and {other} are both leaders of term {term}"
            )
        else:
            self.leaders[term] = node
        if self.read_log is not None:
            view = self.read_log(node)
            if view is not None:
                self._leader_completeness(rec["t"], node, term, view)
                self._start_tenure(node, term, view)
                self._commit0[node] = (term, view.commit_index)

    def _on_apply(self, rec: dict[str, Any]) -> None:
        """State Machine Safety: if a server has applied a log entry at a given
        index to its state machine, no other server will ever apply a different
        log entry for the same index."""
        node, index, term, digest = rec["node"], rec["index"], rec["term"], rec["digest"]
        self.applies += 1
        first = self.applied.get(index)
        if first is None:
            self.applied[index] = (term, digest, node)
            if index > self.max_applied:
                self.max_applied = index
            if self.apply_committed and self.read_log is not None:
                self.now = rec["t"]
                for n in self.nodes:
                    v = self.read_log(n)
                    if v is not None:
                        self._committed_kept(n, v)
        elif first[0] != term or first[1] != digest:
            self._violation(
                rec["t"],
                f"State Machine Safety: {node} applied index {index} as term {term} "
                f"digest {digest}, but {first[2]} applied term {first[0]} digest {first[1]}",
            )
        if self.apply_committed and self.read_log is not None:
            # Figure 2, rules for all servers: only entries up to commitIndex are applied
            # (records reach the checker after the step, with its final commit index)
            view = self.read_log(node)
            if view is not None and index > view.commit_index:
                self._violation(
                    rec["t"], f"Apply Committed Only: {node} applied index {index} beyond its "
                    f"commit index {view.commit_index}"
                )
            # 5.4.2 / Figure 8: a leader moves its commit index only onto an entry of its
            # own term (earlier terms' entries commit with it, never by counting replicas)
            role, c0 = self._role.get(node), self._commit0.get(node)
            if view is not None and role is not None and role[0] == "leader" \
                    and c0 is not None and c0[0] == role[1] and view.commit_index > c0[1] \
                    and view.commit_index >= view.first_index \
                    and view.term_at(view.commit_index) != role[1]:
                self._violation(
                    rec["t"], f"Leader Commit Rule: {node}, leader of term {role[1]}, "
                    f"committed index {view.commit_index} of term "
                    f"{view.term_at(view.commit_index)} by counting replicas"
                )
            if view is not None and role is not None and role[0] == "leader":
                self._commit_majority(rec["t"], node, role[1], view)
        expect = self._next_apply.get(node)
        if expect is not None and index != expect:
            self._violation(
                rec["t"], f"{node} applied index {index} but the next in order was {expect}"
            )
        self._next_apply[node] = index + 1

    def _commit_majority(self, t: float, node: str, term: int, view: LogView) -> None:
        """Commit Majority (Figure 2, rules for leaders: N is committed once a majority
        of matchIndex[i] >= N): when a leader applies, a majority of the voters of its
        configuration hold the entry at its commit index (a crashed voter, or one that
        compacted the index, is given the benefit of the doubt)."""
        c = view.commit_index
        voters = getattr(view, "voters", None)
        if self._majority_checked.get(node) == c or voters is None or self.read_log is None \
                or c < view.first_index:
            return
        self._majority_checked[node] = c
        want = view.term_at(c)
        holders = 0
        for v in voters:
            other = view if v == node else self.read_log(v)
            if other is None or c < other.first_index or (
                    c <= other.last_index and other.term_at(c) == want):
                holders += 1
        if 2 * holders <= len(voters):
            self._violation(
                t, f"Commit Majority: {node}, leader of term {term}, committed index {c} "
                f"held by only {holders} of {len(voters)} voters"
            )

    def _committed_kept(self, node: str, view: LogView) -> None:
        """Committed Entry Kept (from Leader Completeness and AppendEntries receiver
        rule 1): an entry that is committed and in a server's log stays there; no
        AppendEntries that the server accepts conflicts with it."""
        h = self._kept.get(node, 0)
        first, last = view.first_index, view.last_index
        if h >= first:
            known = self.applied.get(h)
            if known is not None:
                held = view.term_at(h) if h <= last else None
                if held != known[0]:
                    where = f"its log ends at {last}" if held is None else f"it holds term {held}"
                    self._violation(
                        self.now, f"Committed Entry Kept: {node} lost committed index {h} "
                        f"(term {known[0]}) that its log held: {where} there"
                    )
                    h = 0
        top = min(last, self.max_applied)
        if top > h and top >= first:
            known = self.applied.get(top)
            if known is not None and view.term_at(top) == known[0]:
                h = top
        self._kept[node] = h

    def _on_snapshot(self, rec: dict[str, Any]) -> None:
        node, index, term = rec["node"], rec["index"], rec["term"]
        first = self.applied.get(index)
        if first is not None and first[0] != term:
            self._violation(
                rec["t"],
                f"State Machine Safety: {node} restored a snapshot at index {index} term "
                f"{term}, but {first[2]} applied term {first[0]} there",
            )
        self._next_apply[node] = index + 1

    # -- log-based properties --------------------------------------------------

    def _leader_completeness(self, t: float, node: str, term: int, view: LogView) -> None:
        """Leader Completeness: if a log entry is committed in a given term, that
        entry will be present in the logs of the leaders for all higher-numbered
        terms."""
        first, last = view.first_index, view.last_index
        applied = self.applied
        # Indexes below ``first`` are compacted into the leader's snapshot.
        for index in range(max(first, 1), self.max_applied + 1):
            known = applied.get(index)
            if known is None:
                continue
            cterm = known[0]
            if cterm >= term:
                continue  # not committed in an earlier term
            if index > last:
                self._violation(
                    t,
                    f"Leader Completeness: {node}, leader of term {term}, lacks committed "
                    f"index {index} (its log ends at {last})",
                )
                return
            lt = view.term_at(index)
            if lt != cterm:
                self._violation(
                    t,
                    f"Leader Completeness: {node}, leader of term {term}, holds term {lt} "
                    f"at committed index {index} (committed term {cterm})",
                )
                return

    def _start_tenure(self, node: str, term: int, view: LogView) -> None:
        last = view.last_index
        if last >= view.first_index and last > 0:
            self._tenure[node] = _Tenure(term, last, view.term_at(last), view.content_at(last))
        else:
            self._tenure[node] = _Tenure(term, last, 0, None)

    def _leader_append_only(self, node: str, view: LogView) -> None:
        """Leader Append-Only: a leader never overwrites or deletes entries in
        its log; it only appends new entries."""
        ten = self._tenure.get(node)
        if ten is None:
            return
        last = view.last_index
        if last < ten.last_index:
            self._violation(
                self.now,
                f"Leader Append-Only: {node} (leader of term {ten.term}) shrank its log "
                f"from {ten.last_index} to {last}",
            )
        elif ten.last_term and ten.last_index >= view.first_index:
            lt, lc = view.term_at(ten.last_index), view.content_at(ten.last_index)
            if lt != ten.last_term or lc != ten.last_content:
                self._violation(
                    self.now,
                    f"Leader Append-Only: {node} (leader of term {ten.term}) overwrote its "
                    f"entry at index {ten.last_index}",
                )
        self._start_tenure(node, ten.term, view)

    def _log_matching(self, a: str, va: LogView, b: str, vb: LogView) -> None:
        """Log Matching: if two logs contain an entry with the same index and
        term, then the logs are identical in all entries up through that index."""
        lo = max(va.first_index, vb.first_index, self._pair_mark.get((a, b), 0) + 1)
        hi = min(va.last_index, vb.last_index)
        top = hi
        while top >= lo and va.term_at(top) != vb.term_at(top):
            top -= 1
        for i in range(top, lo - 1, -1):
            if va.term_at(i) != vb.term_at(i) or va.content_at(i) != vb.content_at(i):
                self._violation(
                    self.now,
                    f"Log Matching: {a} and {b} agree on the term of index {top} but "
                    f"differ at index {i}",
                )
                return
        mark = min(va.commit_index, vb.commit_index, hi)
        if mark > self._pair_mark.get((a, b), 0):
            self._pair_mark[(a, b)] = mark

    def check_logs(self, now: float | None = None) -> None:
        """Run the log-based checks over all live nodes (a check point)."""
        if self.read_log is None:
            return
        if now is not None:
            self.now = now
        self.log_checks += 1
        views: list[tuple[str, LogView]] = []
        for n in self.nodes:
            v = self.read_log(n)
            if v is None:
                self._tenure.pop(n, None)
                self._kept.pop(n, None)
                for key in [k for k in self._pair_mark if n in k]:
                    del self._pair_mark[key]  # its log may lose un-synced entries
                continue
            views.append((n, v))
            if self.apply_committed:
                self._committed_kept(n, v)
            role = self._role.get(n)
            if role is not None and role[0] == "leader":
                self._leader_append_only(n, v)
        self._all_log_matching(views)

    def _all_log_matching(self, views: list[tuple[str, LogView]]) -> None:
        """Log Matching over every pair of ``views``. Each log's (term, content) tail
        above the lowest mark of its pairs is read once; a pair whose two ranges are
        equal (one C-level comparison) cannot break Log Matching and only moves its
        mark, any other pair gets the entry-by-entry check of :meth:`_log_matching`
        (the same verdicts and messages, without reading every entry once per pair).
        Each view's first, last and commit index is read once per check (nothing
        changes a log during a check)."""
        marks = self._pair_mark
        n = len(views)
        names = [a for a, _v in views]
        firsts = [v.first_index for _a, v in views]
        lasts = [v.last_index for _a, v in views]
        commits = [v.commit_index for _a, v in views]
        # every pair's mark, in pair order (i < j), and each log's lowest mark
        pair_marks: list[int] = []
        low = [-1] * n  # -1: no pair yet
        for i in range(n):
            a = names[i]
            for j in range(i + 1, n):
                m = marks.get((a, names[j]), 0)
                pair_marks.append(m)
                if low[i] < 0 or m < low[i]:
                    low[i] = m
                if low[j] < 0 or m < low[j]:
                    low[j] = m
        bases: list[int] = []
        tails: list[list[tuple[Any, Any]]] = []
        for i, (_n, v) in enumerate(views):
            base = max(firsts[i], (low[i] if low[i] >= 0 else 0) + 1)
            term_at, content_at = v.term_at, v.content_at
            bases.append(base)
            tails.append([(term_at(k), content_at(k)) for k in range(base, lasts[i] + 1)])
        k = 0
        for i in range(n):
            a = names[i]
            first_a, last_a, commit_a = firsts[i], lasts[i], commits[i]
            base_a, tail_a = bases[i], tails[i]
            for j in range(i + 1, n):
                mark = pair_marks[k]
                k += 1
                lo = max(first_a, firsts[j], mark + 1)
                hi = min(last_a, lasts[j])
                if lo <= hi:
                    base_b = bases[j]
                    if tail_a[lo - base_a:hi - base_a + 1] \
                            != tails[j][lo - base_b:hi - base_b + 1]:
                        self._log_matching(a, views[i][1], names[j], views[j][1])
                        continue
                new = min(commit_a, commits[j], hi)
                if new > mark:
                    marks[(a, names[j])] = new

    def summary(self) -> dict[str, Any]:
        return {
            "elections": self.elections,
            "terms_with_leader": len(self.leaders),
            "applies": self.applies,
            "committed_indexes": len(self.applied),
            "log_checks": self.log_checks,
            "safety_violations": self.violation_count,
        }
