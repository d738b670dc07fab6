"""The Committed Entry Kept check of the Raft SafetyChecker, on hand-made logs: a
committed entry a server holds stays in its log (Leader Completeness: no later
leader's AppendEntries conflicts with it), unless the server crashes or compacts it;
a divergent entry it never held the committed one in place of is no violation."""

from __future__ import annotations

from typing import Any

from clusterfunk.sim.checkers.raft import SafetyChecker


class Log:
    """A LogView over a list of terms (index 1 = terms[0])."""

    def __init__(self, terms: list[int], commit: int = 0, first: int = 1) -> None:
        self.terms = list(terms)
        self.commit = commit
        self.first = first

    @property
    def first_index(self) -> int:
        return self.first

    @property
    def last_index(self) -> int:
        return len(self.terms)

    @property
    def commit_index(self) -> int:
        return self.commit

    def term_at(self, index: int) -> int:
        return self.terms[index - 1]

    def content_at(self, index: int) -> Any:
        return (index, self.terms[index - 1])


def _checker(logs: dict[str, Log | None]) -> SafetyChecker:
    return SafetyChecker(sorted(logs), logs.get, apply_committed=True)


def _apply(chk: SafetyChecker, node: str, index: int, term: int, t: float) -> None:
    chk({"t": t, "node": node, "ev": "raft.apply", "index": index, "term": term,
         "digest": f"d{index}.{term}"})


def _kept(chk: SafetyChecker) -> list[str]:
    return [v for v in chk.violations if "Committed Entry Kept" in v]


def test_a_committed_entry_overwritten_in_a_follower_is_a_violation() -> None:
    # n1 (leader of term 2) commits index 3 with n2's copy; n2 still has commit 2
    logs: dict[str, Log | None] = {
        "n1": Log([1, 1, 2], commit=3), "n2": Log([1, 1, 2], commit=2), "n3": Log([1, 1])}
    chk = _checker(logs)
    for i, term in ((1, 1), (2, 1), (3, 2)):
        _apply(chk, "n1", i, term, 1.0)
    assert not _kept(chk)
    # a deposed leader's stale AppendEntries replaces n2's index 3 (beyond n2's commit)
    logs["n2"] = Log([1, 1, 1, 1], commit=2)
    chk.check_logs(2.0)
    assert len(_kept(chk)) == 1
    assert "n2 lost committed index 3 (term 2)" in _kept(chk)[0]
    # ... or cuts it off: also seen at the next first apply of an index
    logs["n2"] = Log([1, 1, 2, 2], commit=2)
    chk.check_logs(2.5)
    logs["n2"] = Log([1, 1], commit=2)
    logs["n1"] = Log([1, 1, 2, 2], commit=4)
    _apply(chk, "n1", 4, 2, 3.0)
    assert len(_kept(chk)) == 2 and "its log ends at 2" in _kept(chk)[1]


def test_correct_raft_histories_are_clean() -> None:
    # n3 was a deposed leader with an uncommitted entry of term 1 at index 3: it never
    # held the committed (3, 2), so the leader replacing it is fine
    logs: dict[str, Log | None] = {
        "n1": Log([1, 1, 2], commit=3), "n2": Log([1, 1, 2], commit=2),
        "n3": Log([1, 1, 1], commit=2)}
    chk = _checker(logs)
    for i, term in ((1, 1), (2, 1), (3, 2)):
        _apply(chk, "n1", i, term, 1.0)
    chk.check_logs(1.5)
    logs["n3"] = Log([1, 1, 2], commit=2)  # repaired by the leader of term 2
    chk.check_logs(2.0)
    # n2 crashes and comes back without its un-synced tail: allowed
    chk({"t": 2.1, "node": "sim", "ev": "sim.crash", "target": "n2"})
    logs["n2"] = Log([1, 1], commit=2)
    chk.check_logs(2.5)
    # n1 compacts its log up to index 3 (first index 4): its copy is in the snapshot
    logs["n1"] = Log([1, 1, 2, 2], commit=4, first=4)
    _apply(chk, "n1", 4, 2, 3.0)
    chk.check_logs(3.5)
    assert not _kept(chk), chk.violations
    assert chk.violation_count == 0
