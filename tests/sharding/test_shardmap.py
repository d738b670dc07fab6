"""Shard map properties: ownership, balance, minimal movement, worker ids, spread."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.sharding import ShardMap, diff, longest_run, spread_stats

from .strategies import histories, single_changes, weights

EPS = 1e-9


def check_invariants(m: ShardMap) -> None:
    """Structural invariants and the balance bound of one map."""
    owners = m.owners()
    nodes = m.nodes
    assert list(nodes) == sorted(set(nodes))
    if not nodes:
        assert all(o is None for o in owners)
        return
    assert set(owners) <= set(nodes)
    assert None not in owners
    # node -> shards agrees with shard -> node and partitions the shards.
    seen: list[int] = []
    for node in nodes:
        shards = m.shards_of(node)
        assert list(shards) == sorted(shards)
        assert all(owners[s] == node for s in shards)
        seen.extend(shards)
    assert sorted(seen) == list(range(m.n_shards))
    for s in range(m.n_shards):
        assert m.lookup(s) == m.owner(s) == owners[s]
    # Loads are the sums of the owned weights.
    loads = m.loads()
    for node in nodes:
        expected = sum(m.weight(s) for s in m.shards_of(node))
        assert abs(loads[node] - expected) <= EPS * max(1.0, expected)
    # Balance: max - min <= the heaviest shard, so every node is within one maximum
    # shard weight of its fair share.
    maxw = m.max_weight
    tol = EPS * max(1.0, float(m.total_weight))
    assert max(loads.values()) - min(loads.values()) <= maxw + tol
    fair = m.total_weight / len(nodes)
    assert all(abs(v - fair) <= maxw + tol for v in loads.values())
    # Worker ids: unique small ints.
    ids = list(m.worker_ids().values())
    assert len(set(ids)) == len(ids)
    assert all(0 <= i < 2 * len(ids) + 16 for i in ids)


def check_update(old: ShardMap, new: ShardMap, report_moved: Sequence[int]) -> None:
    """Minimal movement and worker id rules for one update."""
    a, b = old.owners(), new.owners()
    changed = [s for s in range(old.n_shards) if a[s] != b[s]]
    assert list(report_moved) == changed
    old_set, new_set = set(old.nodes), set(new.nodes)
    leavers, joiners = old_set - new_set, new_set - old_set
    for s in changed:
        # A shard moves only if its owner left, or if it moves to a newcomer.
        assert a[s] is None or a[s] in leavers or b[s] in joiners, s
    for s in range(old.n_shards):
        if a[s] in leavers and new_set:
            assert s in report_moved
    # Worker ids: kept by stayers, smallest free ids to joiners in sorted order.
    old_ids, new_ids = old.worker_ids(), new.worker_ids()
    for node in old_set & new_set:
        assert new_ids[node] == old_ids[node]
    taken = {new_ids[x] for x in old_set & new_set}
    free = (i for i in range(10**6) if i not in taken)
    for node in sorted(joiners):
        assert new_ids[node] == next(free)


def run_history(w: object, history: Sequence[frozenset[str]], generic: bool = False):
    m = ShardMap(w)  # type: ignore[arg-type]
    maps = [m]
    for nodes in history:
        new, report = m.update(nodes, _generic=generic)
        check_update(m, new, report.shards)
        assert report.moved == len(report.shards)
        assert report.joined == tuple(sorted(set(nodes) - set(m.nodes)))
        assert report.left == tuple(sorted(set(m.nodes) - set(nodes)))
        m = new
        maps.append(m)
    return maps


@settings(max_examples=500, deadline=None)
@given(weights, histories)
def test_histories_keep_invariants(w: object, history: list[frozenset[str]]) -> None:
    for m in run_history(w, history):
        check_invariants(m)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=120), histories)
def test_fast_paths_equal_general_algorithm(n: int, history: list[frozenset[str]]) -> None:
    fast = run_history(n, history)
    slow = run_history(n, history, generic=True)
    for f, s in zip(fast, slow, strict=True):
        assert f == s
        assert f.encode() == s.encode()


@settings(max_examples=200, deadline=None)
@given(weights, single_changes())
def test_single_join_or_leave_moves_minimum(w: object, change) -> None:
    before, after = change
    m, _ = ShardMap(w).update(before)  # type: ignore[arg-type]
    new, report = m.update(after)
    a, b = m.owners(), new.owners()
    if after < before:  # pure leave: exactly the leavers' shards move
        expected = sorted(s for s in range(len(a)) if a[s] not in after)
        assert list(report.shards) == expected
    else:  # pure join: only shards that go to a newcomer move
        assert all(b[s] in after - before for s in report.shards)
        assert all(a[s] == b[s] for s in range(len(a)) if s not in set(report.shards))
        # ... and no more than balance needs: each newcomer ends up near its fair share
        fair = m.total_weight / len(after)
        loads = new.loads()
        assert all(loads[j] <= fair + new.max_weight + EPS for j in after - before)


def test_uniform_balance_is_floor_or_ceil_and_remainder_not_on_newcomer() -> None:
    nodes = [f"n{i:02d}" for i in range(50)]
    m = ShardMap.build(10_000, nodes)
    assert set(m.counts().values()) == {200}
    m2, report = m.update([*nodes, "new"])
    counts = m2.counts()
    assert set(counts.values()) == {196, 197}
    assert counts["new"] == 196  # the newcomer does not take the rounding remainder
    assert report.moved == 196
    # The remainder stays with existing nodes: donors give in id order, so the
    # last ids keep one more (deterministic, not arbitrary).
    assert sorted(x for x, c in counts.items() if c == 197) == ["n46", "n47", "n48", "n49"]
    m3, report = m2.update([*nodes[1:], "new"])
    assert report.moved == counts["n00"] == 196
    assert set(m3.counts().values()) == {200}


def test_init_is_round_robin_over_sorted_ids() -> None:
    m = ShardMap.build(10, ["c", "a", "b"])
    assert m.owners() == ("a", "b", "c", "a", "b", "c", "a", "b", "c", "a")
    assert m.worker_ids() == {"a": 0, "b": 1, "c": 2}


def test_worker_ids_reuse_smallest_freed_first() -> None:
    m = ShardMap.build(100, ["a", "b", "c", "d"])
    m, _ = m.update(["a", "d"])  # frees 1 and 2
    m, _ = m.update(["a", "d", "z"])
    assert m.worker_id("z") == 1
    m, _ = m.update(["a", "d", "z", "y", "x"])
    assert (m.worker_id("x"), m.worker_id("y")) == (2, 4)
    with pytest.raises(KeyError):
        m.worker_id("b")


def test_more_nodes_than_shards_and_empty_node_set() -> None:
    m = ShardMap.build(3, [f"n{i}" for i in range(7)])
    check_invariants(m)
    assert sorted(m.counts().values()) == [0, 0, 0, 0, 1, 1, 1]
    empty, report = m.update([])
    assert empty.owners() == (None, None, None)
    assert report.moved == 3 and report.left == m.nodes
    again, report = empty.update(["x"])
    assert again.owners() == ("x", "x", "x") and report.moved == 3


def test_update_with_same_nodes_is_a_no_op() -> None:
    m = ShardMap.build(50, ["a", "b"])
    same, report = m.update(iter(["b", "a", "a"]))
    assert same is m and report.moved == 0 and report.shards == ()


@pytest.mark.parametrize(
    ("nodes", "exc"),
    [
        ("abc", TypeError),
        ([1], TypeError),
        ([""], ValueError),
        (["x" * 256], ValueError),
        (["\ud800"], ValueError),
    ],
)
def test_bad_node_ids(nodes: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        ShardMap(10).update(nodes)  # type: ignore[arg-type]


def test_lookup_errors() -> None:
    m = ShardMap.build(4, ["a"])
    with pytest.raises(IndexError):
        m.owner(4)
    with pytest.raises(IndexError):
        m.owner(-1)
    assert m.shards_of("nobody") == ()


@settings(max_examples=100, deadline=None)
@given(weights, histories, histories)
def test_diff_gained_and_lost(w: object, h1, h2) -> None:
    a = run_history(w, h1)[-1]
    b = run_history(w, h2)[-1]
    d = diff(a, b)
    oa, ob = a.owners(), b.owners()
    for s in range(a.n_shards):
        if oa[s] != ob[s]:
            if ob[s] is not None:
                assert s in d[ob[s]][0]
            if oa[s] is not None:
                assert s in d[oa[s]][1]
    total_gained = sum(len(g) for g, _ in d.values())
    assert total_gained == sum(1 for s in range(a.n_shards) if oa[s] != ob[s] and ob[s])
    assert diff(a, a) == {}
    with pytest.raises(ValueError):
        diff(a, ShardMap(a.n_shards + 1))


def test_spread_of_sequential_shards() -> None:
    """Runs of consecutive shards on one node stay short through joins and leaves."""
    rng = random.Random(7)
    nodes = [f"node-{i:03d}" for i in range(50)]
    m = ShardMap.build(10_000, nodes)
    assert spread_stats(m)["longest_run"] == 1
    pool = nodes + [f"extra-{i}" for i in range(20)]
    current = set(nodes)
    worst = 0
    for _ in range(40):
        if rng.random() < 0.5 and len(current) > 30:
            current.discard(rng.choice(sorted(current)))
        else:
            current.add(rng.choice(pool))
        m, _ = m.update(current)
        worst = max(worst, longest_run(m.owners()))
        # Every node's shards cover the id space: none sits in one half only.
        for node in m.nodes:
            shards = m.shards_of(node)
            assert shards[0] < 2500 and shards[-1] > 7500
    # A random assignment of 10k shards to ~50 nodes has longest runs of about 3-4.
    assert worst <= 4


def test_longest_run() -> None:
    assert longest_run([]) == 0
    assert longest_run("aabbbc") == 3
    assert longest_run("abab") == 1
