"""``clusterfunk audit`` on real simulation traces and on hand-edited ones.

The clean traces come from ``clusterfunk simulate ... --nemesis all`` (plus a
scripted crash and restart so resets are exercised); the audit must agree with
the in-run checkers (all clean). Each hand edit breaks one property and the audit
must name it; each broken line must give exit 2 with its line number.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest

from clusterfunk.audit import Options, audit, read
from clusterfunk.audit.base import NOT_APPLICABLE, OK, VIOLATED

from .helpers import audit_cli, dump, load, simulate

RUNS: dict[str, tuple[str, int, int, tuple[str, ...]]] = {
    # name: protocol, nodes, seed, extra options
    "raft-crash": ("raft", 5, 11, ("--crash", "n3@20", "--restart", "n3@26")),
    "raft-7": ("raft", 5, 7, ()),
    "raft-22": ("raft", 5, 22, ()),
    "cluster": ("cluster", 10, 7, ("--crash", "n5@20", "--restart", "n5@30")),
    "gossip": ("gossip", 10, 1, ("--crash", "n4@10")),
}

#: The checks each protocol's trace must exercise (status ok, not n/a).
APPLIED = {
    "raft": {"election safety", "state machine safety", "apply order", "linearizability"},
    "cluster": {
        "election safety", "state machine safety", "apply order", "shard-map agreement",
        "gossip false positives", "shard ownership",  # shard.acquire/release (issue 9)
    },
    "gossip": {"gossip false positives"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, pathlib.Path, str]]:
    d = tmp_path_factory.mktemp("audit-traces")
    return {
        name: simulate(d, proto, nodes, seed, 60, *extra)
        for name, (proto, nodes, seed, extra) in RUNS.items()
    }


def _statuses(path: pathlib.Path) -> dict[str, str]:
    report = audit(read([str(path)]))
    return {v.check: v.status for v in report.verdicts}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_agrees_with_the_in_run_checkers(runs, name: str) -> None:
    rc_sim, path, summary = runs[name]
    assert rc_sim == 0, summary  # the in-run checkers: clean
    rc, out, err = audit_cli(str(path))
    assert (rc, err) == (0, ""), out
    assert "no violations" in out
    statuses = _statuses(path)
    proto = RUNS[name][0]
    assert {c for c, s in statuses.items() if s == OK} == APPLIED[proto], statuses
    assert all(s == NOT_APPLICABLE for c, s in statuses.items() if c not in APPLIED[proto])


def test_resets_are_exercised(runs) -> None:
    """The scripted crash/restart really happens, and the applies after it are
    accepted only because of the reset (without it they jump back)."""
    _, path, _ = runs["raft-crash"]
    recs = load(path)
    assert any(r["ev"] == "sim.crash" and r["target"] == "n3" for r in recs)
    report = audit(read([str(path)]))
    order = next(v for v in report.verdicts if v.check == "apply order")
    resets = int(order.summary.split(", ")[-1].split()[0])
    assert resets >= 2, order.summary
    # Drop the reset events: the re-application after the restart is out of order.
    kept = [r for r in recs if r["ev"] not in ("sim.crash", "sim.restart")]
    edited = dump(path.with_name("no-reset.jsonl"), kept)
    assert _statuses(edited)["apply order"] == VIOLATED


# -- hand-edited traces ---------------------------------------------------------------


def _edit(runs, name: str, tmp_path: pathlib.Path) -> list[dict[str, Any]]:
    return copy.deepcopy(load(runs[name][1]))


def _violations(path: pathlib.Path) -> tuple[int, str, dict[str, list[str]]]:
    rc, out, err = audit_cli(str(path))
    assert err == ""
    report = audit(read([str(path)]))
    found = {v.check: [x.text for x in v.violations] for v in report.verdicts if v.count}
    return rc, out, found


def test_two_leaders_in_one_term(runs, tmp_path) -> None:
    recs = _edit(runs, "raft-7", tmp_path)
    i, lead = next((i, r) for i, r in enumerate(recs)
                   if r["ev"] == "raft.role" and r["role"] == "leader")
    other = next(n for n in recs[0]["nodes"] if n != lead["node"])
    recs.insert(i + 1, {"t": lead["t"], "node": other, "ev": "raft.role",
                        "term": lead["term"], "role": "leader"})
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert rc == 1
    assert list(found) == ["election safety"], found
    assert f"{other} and {lead['node']} are both leaders of term {lead['term']}" in out
    assert f"t.jsonl:{i + 2}" in out  # the inserted line


def test_diverging_apply(runs, tmp_path) -> None:
    recs = _edit(runs, "raft-7", tmp_path)
    applies = [r for r in recs if r["ev"] == "raft.apply"]
    victim = applies[len(applies) // 2]
    first = next(r for r in applies if r["index"] == victim["index"])
    if first is victim:
        victim = next(r for r in applies[len(applies) // 2 + 1:]
                      if r["index"] == first["index"])
    victim["digest"] = "0" * 32
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert rc == 1
    assert list(found) == ["state machine safety"], found
    assert (f"{victim['node']} applied index {victim['index']} as term {victim['term']} "
            f"digest {'0' * 32}, but {first['node']} applied") in out


def test_out_of_order_apply(runs, tmp_path) -> None:
    recs = _edit(runs, "raft-7", tmp_path)
    mine = [r for r in recs if r["ev"] == "raft.apply" and r["node"] == "n2"]
    a, b = mine[100], mine[101]
    assert b["index"] == a["index"] + 1
    for k in ("index", "term", "digest"):  # swap the entries: same set, wrong order
        a[k], b[k] = b[k], a[k]
    rc, _, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert rc == 1
    assert list(found) == ["apply order"], found
    i = b["index"]  # now applied second
    assert found["apply order"] == [
        f"n2 applied index {i + 1} but the next in order was {i}",
        f"n2 applied index {i} but the next in order was {i + 2}",
        f"n2 applied index {i + 2} but the next in order was {i + 1}",  # the one after
    ]


def test_non_linearizable_read(runs, tmp_path) -> None:
    recs = _edit(runs, "raft-7", tmp_path)
    calls: dict[str, dict[str, Any]] = {}
    victim = None
    for r in recs:
        if r["ev"] == "kv.call":
            calls[r["client"]] = r
        elif (r["ev"] == "kv.return" and r["outcome"] == "ok"
              and calls[r["client"]]["op"] == "get" and r["result"] is not None
              and r["t"] > 30):
            victim = r
            break
    assert victim is not None
    key = calls[victim["client"]]["key"]
    victim["result"] = "a value nobody wrote"
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert rc == 1
    assert list(found) == ["linearizability"], found
    assert f"key {key!r} is not linearizable" in out
    assert "a value nobody wrote" in out


def test_stale_read_after_a_write_returned(tmp_path) -> None:
    """A read that returns an overwritten value after the overwrite returned: every
    value was written, so only the real-time order condemns it."""
    recs = [
        {"t": 0, "node": "sim", "ev": "sim.start", "seed": 1, "nodes": ["n1"]},
        {"t": 1, "node": "c1", "ev": "kv.call", "client": "c1", "op": "put", "key": "k",
         "value": "a"},
        {"t": 2, "node": "c1", "ev": "kv.return", "client": "c1", "outcome": "ok",
         "result": None},
        {"t": 3, "node": "c1", "ev": "kv.call", "client": "c1", "op": "put", "key": "k",
         "value": "b"},
        {"t": 4, "node": "c1", "ev": "kv.return", "client": "c1", "outcome": "ok",
         "result": None},
        {"t": 5, "node": "c2", "ev": "kv.call", "client": "c2", "op": "get", "key": "k"},
        {"t": 6, "node": "c2", "ev": "kv.return", "client": "c2", "outcome": "ok",
         "result": "a"},
        {"t": 7, "node": "sim", "ev": "sim.end", "events": 1},
    ]
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert (rc, list(found)) == (1, ["linearizability"]), out
    recs[6]["result"] = "b"
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert (rc, found) == (0, {}), out


def test_shard_map_digest_disagreement(runs, tmp_path) -> None:
    recs = _edit(runs, "cluster", tmp_path)
    maps = [r for r in recs if r["ev"] == "cluster.shardmap" and r["phase"] == "committed"]
    first = maps[0]
    victim = next(r for r in maps[1:] if r["index"] == first["index"])
    victim["digest"] = "f" * 32
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert rc == 1
    assert list(found) == ["shard-map agreement"], found
    assert (f"{victim['node']} applied the committed map at {first['index']} with digest "
            f"{'f' * 32}, but {first['node']} applied digest {first['digest']}") in out


def test_commit_differs_from_its_proposal(tmp_path) -> None:
    base = {"ev": "cluster.shardmap", "index": 5, "nodes": ["n1", "n2"], "moved": 3}
    recs = [
        {"t": 0, "node": "sim", "ev": "sim.start", "seed": 1, "nodes": ["n1", "n2"]},
        {"t": 1, "node": "n1", **base, "phase": "proposed", "digest": "a" * 32},
        {"t": 2, "node": "n1", **base, "phase": "committed", "digest": "b" * 32},
        {"t": 3, "node": "sim", "ev": "sim.end", "events": 1},
    ]
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", recs))
    assert (rc, list(found)) == (1, ["shard-map agreement"]), out
    recs[2]["digest"] = "a" * 32
    assert _violations(dump(tmp_path / "t.jsonl", recs))[0] == 0


def test_gossip_false_positive_and_fault_windows(runs, tmp_path) -> None:
    recs = _edit(runs, "gossip", tmp_path)
    end = next(i for i, r in enumerate(recs) if r["ev"] == "sim.end")
    crash = next(r for r in recs if r["ev"] == "sim.crash")
    assert crash["target"] == "n4"
    claim = {"node": "n2", "ev": "gossip.member", "member": "n4", "status": "dead",
             "incarnation": 1}
    # n4 is down at the end: declaring it dead then is right, not a false positive.
    late = [*recs[:end], {"t": recs[end]["t"], **claim}, *recs[end:]]
    assert _violations(dump(tmp_path / "t.jsonl", late))[0] == 0
    # At t=1 n4 is up and nothing has disturbed it yet: a false positive.
    assert not [r for r in recs if r["ev"].startswith("sim.") and 0 < r["t"] <= 1
                and r["ev"] not in ("sim.link",)]
    at = next(i for i, r in enumerate(recs) if r["t"] > 1)
    early = [*recs[:at], {"t": 1.0, **claim}, *recs[at:]]
    rc, out, found = _violations(dump(tmp_path / "t.jsonl", early))
    assert rc == 1 and list(found) == ["gossip false positives"], out
    assert found["gossip false positives"] == [
        "n2 declared n4 dead (incarnation 1) while n4 was up and no fault touched it in the "
        "last 41.0 s"
    ]


def test_gossip_grace_matches_the_workload() -> None:
    """The audit's copy of the profile timing gives the workload's detection bound."""
    from clusterfunk.audit.gossip import PROFILES, detection_bound
    from clusterfunk.gossip.config import profile
    from clusterfunk.sim.workloads.gossip import detection_bound as workload_bound

    for name in PROFILES:
        for n in (3, 10, 50, 1000):
            assert detection_bound(name, n) == pytest.approx(workload_bound(profile(name), n))


# -- malformed traces: exit 2, one line naming file and line ---------------------------


def _rc2(path: pathlib.Path, needle: str) -> str:
    rc, out, err = audit_cli(str(path))
    assert rc == 2 and out == "", (rc, out, err)
    assert err.count("\n") == 1 and needle in err, err
    return err


def test_truncated_last_line(runs, tmp_path) -> None:
    text = runs["raft-7"][1].read_text()
    cut = text[: len(text) - 10]  # the sim.end line loses its end
    lines = cut.count("\n") + 1
    _rc2(_write(tmp_path, cut), f"t.jsonl:{lines}: not JSON")


def test_garbage_line(runs, tmp_path) -> None:
    lines = runs["raft-7"][1].read_text().splitlines(keepends=True)
    lines.insert(50, "garbage\n")
    _rc2(_write(tmp_path, "".join(lines)), "t.jsonl:51: not JSON")


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"node": "n1", "ev": "raft.role", "term": 1, "role": "leader"}, "missing field 't'"),
        ({"t": 1, "node": "n1", "ev": "raft.apply", "index": 3, "term": 1},
         "raft.apply: missing field 'digest'"),
        ({"t": 1, "node": "n1", "ev": "raft.role", "term": "1", "role": "leader"},
         "raft.role: field 'term' must be a int"),
        ({"t": 1, "node": "n1", "ev": "raft.role", "term": 1, "role": "king"},
         "raft.role: field 'role' is 'king'"),
        ([1, 2], "a line must be a JSON object"),
        ({"t": 1, "node": "n1", "ev": "gossip.member", "member": "n2", "status": "dead",
          "incarnation": True}, "gossip.member: field 'incarnation' must be a int"),
    ],
)
def test_missing_or_bad_fields(tmp_path, record: Any, needle: str) -> None:
    head = {"t": 0, "node": "sim", "ev": "sim.start", "seed": 1, "nodes": ["n1"]}
    text = json.dumps(head) + "\n" + json.dumps(record) + "\n"
    _rc2(_write(tmp_path, text), f"t.jsonl:2: {needle}")


def test_time_going_backwards_and_empty_and_cut_short(tmp_path) -> None:
    recs = [{"t": 5, "node": "n1", "ev": "raft.role", "term": 1, "role": "follower"},
            {"t": 4, "node": "n1", "ev": "raft.role", "term": 2, "role": "follower"}]
    _rc2(dump(tmp_path / "t.jsonl", recs), "t.jsonl:2: t=4 is earlier")
    _rc2(_write(tmp_path, ""), "no records")
    recs = [{"t": 0, "node": "sim", "ev": "sim.start", "seed": 1, "nodes": ["n1"]}]
    _rc2(dump(tmp_path / "t.jsonl", recs), "t.jsonl:1: the simulation trace ends without sim.end")


def test_unreadable_file(tmp_path) -> None:
    rc, _, err = audit_cli(str(tmp_path / "missing.jsonl"))
    assert rc == 2 and "cannot read trace" in err


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    p = tmp_path / "t.jsonl"
    p.write_text(text)
    return p


# -- several files, and the JSON report ------------------------------------------------


def test_per_node_files_merge_to_the_same_verdicts(runs, tmp_path) -> None:
    """A trace split into one file per emitting node audits the same (ties in t
    across files keep file order: the sim file goes first)."""
    _, path, _ = runs["raft-crash"]
    recs = load(path)
    by_node: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_node.setdefault(r["node"], []).append(r)
    files = [str(dump(tmp_path / f"{n}.jsonl", rs)) for n, rs in sorted(
        by_node.items(), key=lambda kv: (kv[0] != "sim", kv[0]))]
    whole = audit(read([str(path)]))
    split = audit(read(files))
    assert split.records == whole.records
    assert [(v.check, v.status, v.summary) for v in split.verdicts] == [
        (v.check, v.status, v.summary) for v in whole.verdicts]


def test_json_report(runs) -> None:
    _, path, _ = runs["cluster"]
    rc, out, _ = audit_cli("--json", str(path))
    rep = json.loads(out)
    assert rc == 0 and rep["verdict"] == "ok" and rep["violations"] == 0
    assert len(rep["nodes"]) == 10 and rep["seed"] == 7
    assert {c["check"] for c in rep["checks"]} >= APPLIED["cluster"]


def test_limit_keeps_the_count(tmp_path) -> None:
    recs = [{"t": 0, "node": "sim", "ev": "sim.start", "seed": 1, "nodes": ["n1", "n2"]}]
    for term in range(1, 6):
        for n in ("n1", "n2"):
            recs.append({"t": term, "node": n, "ev": "raft.role", "term": term,
                         "role": "leader"})
    recs.append({"t": 9, "node": "sim", "ev": "sim.end", "events": 1})
    report = audit(read([str(dump(tmp_path / "t.jsonl", recs))]), Options(limit=2))
    v = next(v for v in report.verdicts if v.check == "election safety")
    assert v.count == 5 and len(v.violations) == 2
