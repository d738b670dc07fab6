"""What ``clusterfunk view`` puts in the page, from small hand-written traces."""

from __future__ import annotations

import json
import re

from clusterfunk.audit import read
from clusterfunk.view import build, render
from tests.audit.helpers import dump

from .helpers import view_cli


def _rec(t: float, node: str, ev: str, **fields) -> dict:
    return {"t": t, "node": node, "ev": ev, **fields}


def _trace() -> list[dict]:
    nodes = ["n1", "n2", "n3", "n10"]
    return [
        _rec(0, "sim", "sim.start", seed=3, nodes=nodes),
        _rec(0, "n1", "raft.role", term=0, role="follower"),
        _rec(1, "n1", "raft.role", term=1, role="leader"),
        _rec(1, "n2", "raft.role", term=1, role="follower"),
        _rec(1.5, "n1", "net.send", src="n1:8300", dst="n2:8300", kind="stream", bytes=40),
        _rec(1.5, "n1", "net.send", src="n1:8300", dst="n3:8300", kind="stream", bytes=40),
        _rec(1.6, "n2", "net.deliver", src="n1:8300", dst="n2:8300", kind="stream", bytes=40),
        _rec(1.7, "n1", "net.drop", src="n1:8300", dst="n3:8300", kind="stream",
             reason="partition"),
        _rec(2, "sim", "sim.partition", groups=[["n1", "n2"], ["n10", "n3"]]),
        _rec(3, "sim", "sim.disk", target="n3", kind="torn_write"),
        _rec(3, "sim", "sim.crash", target="n3"),
        _rec(3.5, "n2", "gossip.member", member="n3", status="suspect", incarnation=1),
        _rec(4, "n2", "gossip.member", member="n3", status="dead", incarnation=1),
        _rec(4, "sim", "sim.heal"),
        _rec(5, "sim", "sim.restart", target="n3"),
        _rec(5.5, "sim", "sim.pause", target="n10"),
        _rec(5.6, "sim", "sim.link", target="n2", latency=0.2, jitter=0.0, loss=0.0,
             duplicate=0.0, reorder=0.0, stream_reset=0.0),
        _rec(5.8, "sim", "sim.link", target="n2", latency=0.0, jitter=0.0, loss=0.0,
             duplicate=0.0, reorder=0.0, stream_reset=0.0),
        _rec(6, "n1", "cluster.shardmap", phase="proposed", index=7, nodes=["n1", "n2"],
             digest="a" * 32, moved=5),
        _rec(6.2, "n1", "cluster.shardmap", phase="committed", index=7, nodes=["n1", "n2"],
             digest="a" * 32, moved=5),
        _rec(6.3, "n2", "cluster.shardmap", phase="committed", index=7, nodes=["n1", "n2"],
             digest="b" * 32, moved=5),
        _rec(7, "c1", "kv.call", client="c1", op="get", key="k"),
        _rec(7.5, "c1", "kv.return", client="c1", outcome="ok",
             result="</script><script>document.title='owned'</script>"),
        _rec(8, "sim", "sim.end", events=1),
    ]


def test_model_holds_lanes_faults_roles_gossip_maps_messages(tmp_path) -> None:
    path = dump(tmp_path / "t.jsonl", _trace())
    d = build(read([str(path)]), "t")
    assert d["nodes"] == ["n1", "n2", "n3", "n10"]  # natural order; client c1 is no lane
    assert d["crashes"] == [[2, 3, 5]]
    assert d["disks"] == [[2, 3, "torn_write"]]
    assert d["pauses"] == [[3, 5.5, None]]  # still paused at the end
    # a slow node (sim.link with a target) is a span on its lane, not a global change
    assert d["slow"] == [[1, 5.6, 5.8, 0.2]] and d["links"] == []
    assert d["partitions"] == [[2, 4, [[0, 1], [3, 2]], False]]
    assert d["roles"][0] == [[0, 0, 0], [1, 3, 1]] and d["roles"][2] == []
    assert d["gossip"] == [[3.5, 1, 2, 1], [4, 1, 2, 2]]
    assert d["maps"] == [[6.2, 7, "a" * 32, 5, [0, 1], 6]]
    assert d["node_map"][1] == [[6.3, 7]]
    # one delivered stream frame, one dropped by the partition (reason code 2)
    assert d["msgs"] == [[1.5, 1.6, 0, 1, 1, 0], [1.5, 1.7, 0, 2, 1, 2]]
    assert sum(map(sum, d["density"]["counts"])) == 2
    # the audit's violations: the diverging map and the read of a value never written
    checks = sorted(v[1] for v in d["violations"])
    assert checks == ["linearizability", "shard-map agreement"]
    smv = next(v for v in d["violations"] if v[1] == "shard-map agreement")
    assert smv[4] == [1, 0]  # lanes of n2 and n1


def test_page_data_cannot_close_its_script_element(tmp_path) -> None:
    path = dump(tmp_path / "t.jsonl", _trace())
    page = render(build(read([str(path)]), "t</title><b>"))
    blob = page.split('<script type="application/json" id="data">', 1)[1]
    blob = blob.split("</script>", 1)[0]
    data = json.loads(blob)  # the whole data block survived, "</" escaped
    assert "document.title='owned'" in json.dumps(data["violations"])
    assert "<title>t&lt;/title&gt;&lt;b&gt;</title>" in page


def test_messages_are_sampled_beyond_the_cap(tmp_path) -> None:
    recs = [_rec(0, "sim", "sim.start", seed=1, nodes=["n1", "n2"])]
    for k in range(1000):
        t = 1 + k / 1000
        recs.append(_rec(t, "n1", "net.send", src="n1:1", dst="n2:1", kind="dgram", bytes=k))
        recs.append(_rec(t, "n2", "net.deliver", src="n1:1", dst="n2:1", kind="dgram", bytes=k))
    recs.append(_rec(3, "sim", "sim.end", events=1))
    d = build(read([str(dump(tmp_path / "t.jsonl", recs))]), "t", max_messages=100)
    assert d["meta"]["messages_total"] == 1000
    assert d["meta"]["messages_sampled_every"] == 10 and len(d["msgs"]) == 100
    assert all(m[1] == m[0] for m in d["msgs"])  # each paired with its own delivery
    assert sum(map(sum, d["density"]["counts"])) == 1000  # density counts all of them


def test_cli_views_a_cut_trace_but_not_a_garbage_one(tmp_path) -> None:
    recs = _trace()[:-1]  # no sim.end: the audit would call it cut short; the view shows it
    path = dump(tmp_path / "t.jsonl", recs)
    rc, out = view_cli(str(path), "-o", str(tmp_path / "t.html"))
    assert rc == 0 and re.search(r"wrote .*t\.html: .* 4 lanes", out), out
    path.write_text(path.read_text() + "{not json\n")
    rc, out = view_cli(str(path), "-o", str(tmp_path / "u.html"))
    assert rc == 2 and f"{path}:{len(recs) + 1}: not JSON" in out
    assert not (tmp_path / "u.html").exists()


def test_gossip_keeps_status_changes_and_caps_only_first_contacts(tmp_path) -> None:
    nodes = [f"n{i}" for i in range(1, 5)]
    recs = [_rec(0, "sim", "sim.start", seed=1, nodes=nodes)]
    for o in nodes:  # everyone learns everyone: 16 first contacts
        for m in nodes:
            recs.append(_rec(1, o, "gossip.member", member=m, status="alive", incarnation=0))
    recs += [
        _rec(2, "n1", "gossip.member", member="n2", status="alive", incarnation=1),  # no change
        _rec(3, "n1", "gossip.member", member="n2", status="suspect", incarnation=1),
        _rec(4, "n1", "gossip.member", member="n2", status="alive", incarnation=2),
        _rec(5, "n3", "gossip.member", member="n4", status="dead", incarnation=0),
        _rec(6, "sim", "sim.end", events=1),
    ]
    d = build(read([str(dump(tmp_path / "t.jsonl", recs))]), "t", max_gossip=5)
    assert d["meta"]["gossip_dropped"] == 11  # 16 first contacts, 5 fit under the cap
    assert d["gossip"][5:] == [[3, 0, 1, 1], [4, 0, 1, 0], [5, 2, 3, 2]]
    d = build(read([str(dump(tmp_path / "t.jsonl", recs))]), "t")
    assert d["meta"]["gossip_dropped"] == 0 and len(d["gossip"]) == 19
