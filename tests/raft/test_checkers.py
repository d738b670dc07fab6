"""The online safety checker flags each of the five properties when broken."""

from __future__ import annotations

import attrs

from clusterfunk.sim.checkers.raft import SafetyChecker


@attrs.define
class FakeLog:
    """A log of (term, content) entries starting at ``first_index``."""

    entries: list[tuple[int, str]]
    first_index: int = 1
    commit_index: int = 0

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    def term_at(self, index: int) -> int:
        return self.entries[index - self.first_index][0]

    def content_at(self, index: int) -> str:
        return self.entries[index - self.first_index][1]


def role(t, node, term, r="leader"):
    return {"t": t, "node": node, "ev": "raft.role", "term": term, "role": r}


def apply(t, node, index, term, digest):
    return {
        "t": t,
        "node": node,
        "ev": "raft.apply",
        "index": index,
        "term": term,
        "digest": digest,
    }


def test_election_safety_two_leaders_in_one_term():
    c = SafetyChecker(["n1", "n2", "n3"])
    c(role(1.0, "n1", 2))
    c(role(1.1, "n2", 2, "follower"))
    assert c.violations == []
    c(role(2.0, "n2", 2))
    assert len(c.violations) == 1 and "Election Safety" in c.violations[0]
    c(role(3.0, "n3", 3))
    c(role(4.0, "n1", 4))
    assert c.violation_count == 1 and c.elections == 4


def test_state_machine_safety_different_digest_at_an_index():
    c = SafetyChecker(["n1", "n2"])
    c(apply(1.0, "n1", 1, 1, "aa"))
    c(apply(1.0, "n2", 1, 1, "aa"))
    c(apply(1.1, "n1", 2, 1, "bb"))
    assert c.violations == []
    c(apply(1.2, "n2", 2, 1, "cc"))
    assert "State Machine Safety" in c.violations[0] and "index 2" in c.violations[0]


def test_applies_must_be_contiguous_until_a_crash_or_snapshot():
    c = SafetyChecker(["n1"])
    c(apply(1.0, "n1", 1, 1, "a"))
    c(apply(1.0, "n1", 3, 1, "c"))  # skipped 2
    assert c.violation_count == 1 and "next in order was 2" in c.violations[0]
    c({"t": 2.0, "node": "sim", "ev": "sim.crash", "target": "n1"})
    c({"t": 3.0, "node": "n1", "ev": "raft.snapshot", "index": 3, "term": 1})
    c(apply(3.0, "n1", 4, 1, "d"))
    assert c.violation_count == 1
    c({"t": 3.0, "node": "n1", "ev": "raft.snapshot", "index": 4, "term": 2})  # wrong term
    assert c.violation_count == 2


def test_leader_completeness_missing_committed_entry():
    logs = {
        "n1": FakeLog([(1, "a"), (1, "b")]),
        "n2": FakeLog([(1, "a")]),
    }
    c = SafetyChecker(["n1", "n2"], logs.get)
    c(apply(1.0, "n1", 1, 1, "x"))
    c(apply(1.0, "n1", 2, 1, "y"))
    c(role(2.0, "n1", 2))
    assert c.violations == []
    c(role(3.0, "n2", 3))  # lacks index 2
    assert "Leader Completeness" in c.violations[0] and "lacks committed index 2" in c.violations[0]


def test_leader_completeness_wrong_term_and_compaction():
    logs = {"n2": FakeLog([(2, "z")], first_index=2)}
    c = SafetyChecker(["n1", "n2"], logs.get)
    c(apply(1.0, "n1", 1, 1, "x"))  # compacted on n2: not checked
    c(role(2.0, "n2", 3))
    assert c.violations == []
    c(apply(2.5, "n1", 2, 1, "y"))
    c(role(3.0, "n2", 4))
    assert "holds term 2 at committed index 2" in c.violations[0]


def test_leader_append_only_overwrite_and_shrink():
    log = FakeLog([(1, "a"), (2, "b")])
    c = SafetyChecker(["n1"], {"n1": log}.get)
    c(role(1.0, "n1", 2))
    log.entries.append((2, "c"))
    c.check_logs(1.5)
    assert c.violations == []
    log.entries[2] = (2, "other")
    c.check_logs(2.0)
    assert "Leader Append-Only" in c.violations[0] and "overwrote" in c.violations[0]
    del log.entries[1:]
    c.check_logs(3.0)
    assert "shrank" in c.violations[1]
    # A follower may truncate freely.
    c(role(4.0, "n1", 3, "follower"))
    log.entries.clear()
    c.check_logs(5.0)
    assert c.violation_count == 2


def test_log_matching_same_term_different_history():
    logs = {
        "n1": FakeLog([(1, "a"), (1, "b"), (2, "c")]),
        "n2": FakeLog([(1, "a"), (1, "B"), (2, "c")]),
        "n3": FakeLog([(1, "a"), (1, "b"), (3, "d")]),
    }
    c = SafetyChecker(["n1", "n2", "n3"], logs.get)
    c.check_logs(1.0)
    assert c.violation_count == 2  # n1/n2 and n2/n3 differ at index 2
    assert all("Log Matching" in v and "index 2" in v for v in c.violations)


def test_log_matching_accepts_divergent_uncommitted_suffix():
    logs = {
        "n1": FakeLog([(1, "a"), (2, "b"), (2, "c")], commit_index=1),
        "n2": FakeLog([(1, "a"), (3, "x")], commit_index=1),
        "n3": None,
    }
    c = SafetyChecker(["n1", "n2", "n3"], logs.get)
    c.check_logs(1.0)
    assert c.violations == []
    assert c.log_checks == 1


def _pairwise_reference(c: SafetyChecker, views) -> None:
    """The definition: every pair through the entry-by-entry check."""
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            c._log_matching(views[i][0], views[i][1], views[j][0], views[j][1])


def test_log_matching_over_all_pairs_agrees_with_the_pairwise_definition():
    """Property: the shared-tail check (check_logs) reports the same violations and
    keeps the same pair marks as checking every pair entry by entry, over random
    logs (forks, compaction, commit indexes) checked several times as they change."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    entry = st.tuples(st.integers(1, 3), st.sampled_from("abc"))
    log = st.tuples(st.integers(1, 4), st.lists(entry, max_size=8), st.integers(0, 12))
    rounds = st.lists(st.lists(log, min_size=2, max_size=4), min_size=1, max_size=4)

    @settings(max_examples=300, deadline=None)
    @given(rounds)
    def check(steps):
        names = [f"n{i}" for i in range(1, 5)]
        fast = SafetyChecker(names, lambda n: None)
        slow = SafetyChecker(names, lambda n: None)
        for step in steps:
            views = [(names[k], FakeLog(list(es), first, commit))
                     for k, (first, es, commit) in enumerate(step)]
            fast._all_log_matching(views)
            _pairwise_reference(slow, views)
            assert fast.violations == slow.violations
            assert fast._pair_mark == slow._pair_mark

    check()
