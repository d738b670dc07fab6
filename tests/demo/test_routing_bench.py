"""benchmarks/routing.py's trace reading: misrouted answers and ownership clashes
from real nodes' traces, with a SIGKILLed node entered as a crash."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.routing import audit_traces


def write(root: Path, node: str, recs: list[dict], cut: bool = False) -> None:
    text = "".join(json.dumps({"node": node, **r}) + "\n" for r in recs)
    if cut:
        text += '{"t": 9.9, "node": "' + node + '", "ev": "app.req'  # SIGKILL mid-write
    (root / f"{node}.jsonl").write_text(text)


def test_a_killed_holder_serves_nothing_and_a_non_owner_ok_is_misrouted(tmp_path: Path) -> None:
    write(tmp_path, "n1", [
        {"t": 1.0, "ev": "shard.acquire", "index": 4, "shards": [0, 1]},
        {"t": 2.0, "ev": "app.request", "client": "c", "id": 1, "key": 0, "shard": 0,
         "outcome": "ok"},
    ], cut=True)
    write(tmp_path, "n2", [
        {"t": 1.0, "ev": "cluster.shardmap", "phase": "committed", "index": 4,
         "nodes": ["n1", "n2"], "digest": "x", "moved": 2},
        {"t": 6.0, "ev": "cluster.shardmap", "phase": "committed", "index": 7,
         "nodes": ["n2"], "digest": "y", "moved": 2},
        {"t": 6.0, "ev": "shard.acquire", "index": 7, "shards": [0]},
        {"t": 7.0, "ev": "app.request", "client": "c", "id": 2, "key": 1, "shard": 1,
         "outcome": "ok"},  # shard 1 is still n1's: misrouted
    ])
    traces = [tmp_path / f"{n}.jsonl" for n in ("n1", "n2", "n3")]  # n3 never wrote
    # n1 was SIGKILLed at t=5: n2 taking shard 0 at t=6 is no clash
    assert audit_traces(traces, 0.0, 10.0, [(5.0, "n1")]) == {
        "misrouted": 1, "ownership_violations": 0, "traced_requests": 2, "reshards": 2}
    # without the kill, n1 still served shard 0 when n2 acquired it
    res = audit_traces(traces, 5.5, 10.0, [])
    assert res["ownership_violations"] == 1 and res["reshards"] == 1
