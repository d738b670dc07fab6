"""``clusterfunk audit`` on the traces of real ``raft-node`` processes on loopback:
no ``sim.*`` events, one file per process, a SIGKILLed leader that restarts and
re-applies its log into the same (appended) file."""

from __future__ import annotations

import json

import pytest

from clusterfunk.audit import audit, read
from clusterfunk.raft import kv
from clusterfunk.raft.client import SyncClient
from tests.raft.test_process import Cluster

from .helpers import audit_cli


@pytest.mark.slow
def test_real_process_traces_with_a_kill_and_restart(tmp_path) -> None:
    cl = Cluster(tmp_path)
    try:
        for sid in cl.raft:
            cl.start(sid)
        first = cl.leader(list(cl.raft))
        with SyncClient(cl.client, timeout=5) as c:
            for i in range(20):
                c.request(kv.encode_put(f"k{i}", f"v{i}"))
        cl.kill(first)
        survivors = [s for s in cl.raft if s != first]
        cl.leader(survivors)
        with SyncClient({k: cl.client[k] for k in survivors}, timeout=5) as c:
            c.request(kv.encode_put("after", "kill"))
        cl.start(first)
        with SyncClient(cl.client, timeout=5) as c:
            assert c.request(kv.encode_get("after")) == "kill"
        cl.stop_all()
    finally:
        for p in cl.procs.values():
            p.kill()
            p.wait(5)
    files = [str(cl.trace(s)) for s in sorted(cl.raft)]
    # A SIGKILL can cut the killed process's last line; the audit would (rightly)
    # call that file malformed. Line-buffered writes make it rare: check it is whole.
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                json.loads(line)
    rc, out, err = audit_cli(*files)
    assert (rc, err) == (0, ""), out
    report = audit(read(files))
    by = {v.check: v for v in report.verdicts}
    assert report.simulation is None and sorted(report.nodes) == sorted(cl.raft)
    assert by["election safety"].status == "ok"
    assert by["state machine safety"].status == "ok"
    # the restarted node re-applied from index 1 after its boot records
    assert by["apply order"].status == "ok"
    assert "1 process reboots recognised" in by["apply order"].summary
    assert by["gossip false positives"].status == "n/a"

    # The same files with the restarted node's boot records removed: its
    # re-application from index 1 is no longer explained and is flagged.
    killed = cl.trace(first)
    lines = killed.read_text().splitlines(keepends=True)
    recs = [json.loads(x) for x in lines]
    last_apply = max(i for i, r in enumerate(recs) if r["ev"] == "raft.apply"
                     and r["index"] > 1 and any(q["ev"] == "raft.apply" and q["index"] == 1
                                                for q in recs[i + 1:]))
    kept = [x for i, (x, r) in enumerate(zip(lines, recs, strict=True))
            if not (i > last_apply and r["ev"] in ("raft.role", "raft.config")
                    and r["node"] == first)]
    killed.write_text("".join(kept))
    rc, out, _ = audit_cli(*files)
    assert rc == 1 and f"{first} applied index 1 but the next in order was" in out
