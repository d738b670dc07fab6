"""Real processes: three ``cluster-node``s on loopback, inspected and operated with
``clusterfunk ctl`` and ``/metrics``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusterfunk.cli import main
from clusterfunk.runtime.net import free_port

TOKEN = "process-test-token"
SHARDS = 100


class Node:
    """One ``cluster-node`` process; its stdout JSON lines are read by a thread."""

    def __init__(self, node_id: str, join: str | None) -> None:
        self.id = node_id
        self.gossip = free_port()
        cmd = [sys.executable, "-m", "clusterfunk", "cluster-node", "--insecure", "--id", node_id,
               "--shards", str(SHARDS), "--gossip-port", str(self.gossip),
               "--raft-port", str(free_port()), "--coord-port", str(free_port()),
               "--management-port", "0", "--log-level", "warning", "--in-memory"]
        if join:
            cmd += ["--join", join]
        env = {**os.environ, "CLUSTERFUNK_TOKEN": TOKEN}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.last: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line(15.0)
        self.management = first["management"]

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next_line(self, timeout: float) -> dict:
        try:
            rec = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.id}: no line within {timeout} s") from None
        self.last = rec
        return rec

    def drain(self) -> bool:
        """Take every line printed so far; True if there was any."""
        got = False
        while True:
            try:
                self.last = self.lines.get_nowait()
                got = True
            except queue.Empty:
                return got

    def until(self, pred, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        self.drain()
        while self.last is None or not pred(self.last):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.id}: condition not met; last {self.last}")
            self.next_line(left)
        return self.last

    def stop(self, sig: int = signal.SIGINT) -> None:
        self.send(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ctl(node: str, *argv: str, token: str | None = None,
        process: bool = False) -> tuple[int, str, str]:
    """``clusterfunk ctl --node NODE ARGV``: in this process (the same code, over real
    HTTP) or, with ``process=True``, as its own OS process."""
    argv = ("--node", node, *argv, *(("--token", token) if token else ()))
    if process:
        r = subprocess.run([sys.executable, "-m", "clusterfunk", "ctl", *argv],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ctl", *argv])
    return code, out.getvalue(), err.getvalue()


def ctl_json(node: str, *argv: str, process: bool = False) -> Any:
    code, out, err = ctl(node, *argv, "--json", process=process)
    assert code == 0, err
    return json.loads(out)


def start_cluster() -> list[Node]:
    nodes: list[Node] = []
    try:
        nodes.append(Node("a", None))
        seed = f"127.0.0.1:{nodes[0].gossip}"
        nodes += [Node("b", seed), Node("c", seed)]
        for n in nodes:
            n.until(lambda r: r["state"] == "operational" and r["nodes"] == ["a", "b", "c"])
    except BaseException:
        for n in nodes:
            n.stop(signal.SIGKILL)
        raise
    return nodes


@pytest.fixture(scope="module")
def cluster():
    nodes = start_cluster()
    yield nodes
    for n in nodes:  # all leave at once, then wait for each
        n.send(signal.SIGINT)
    for n in nodes:
        n.stop()


def _metrics(node: Node) -> dict:
    r = httpx.get(f"http://{node.management}/metrics", timeout=10)
    assert r.status_code == 200
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.slow
def test_ctl_status_and_nodes_agree_with_the_nodes_own_state(cluster):
    statuses = {}
    for n in cluster:
        for _attempt in range(5):
            n.drain()
            st = ctl_json(n.management, "status", process=n.id == "a")
            if not n.drain():  # no state change while we asked: compare
                break
        own = n.last
        assert st["node"] == n.id
        assert (st["state"], st["role"], st["leader"], st["nodes"]) == \
            (own["state"], own["role"], own["leader"], own["nodes"])
        statuses[n.id] = st
    leaders = {st["leader"] for st in statuses.values()}
    assert len(leaders) == 1 and leaders <= {"a", "b", "c"}
    leader = leaders.pop()
    assert [st["role"] for _id, st in sorted(statuses.items())] == \
        ["leader" if i == leader else "follower" for i in ("a", "b", "c")]
    assert len({(st["term"], st["map_index"]) for st in statuses.values()}) == 1
    assert all(st["commit_index"] >= st["map_index"] > 0 for st in statuses.values())

    for n in cluster:
        nodes = ctl_json(n.management, "nodes")
        assert [x["node"] for x in nodes] == statuses[n.id]["nodes"] == ["a", "b", "c"]
        assert sorted(x["worker_id"] for x in nodes) == [0, 1, 2]
        assert sorted(x["shards"] for x in nodes) == [33, 33, 34]
        assert sum(x["weight"] for x in nodes) == SHARDS

    # the table form works against a real node too
    code, out, err = ctl(cluster[0].management, "members")
    assert code == 0 and "3 gossip members" in out and err == ""


@pytest.mark.slow
def test_metrics_match_ctl_status(cluster):
    for n in cluster:
        st = ctl_json(n.management, "status")
        m = _metrics(n)
        assert m[("clusterfunk_node_info", (("node", n.id), ("version", st["version"])))] == 1
        assert m[("clusterfunk_raft_term", ())] == st["term"]
        assert m[("clusterfunk_shardmap_index", ())] == st["map_index"]
        assert m[("clusterfunk_cluster_nodes", ())] == len(st["nodes"]) == 3
        assert m[("clusterfunk_node_role", (("role", st["role"]),))] == 1
        assert m[("clusterfunk_node_state", (("state", st["state"]),))] == 1
        assert m[("clusterfunk_members", (("status", "alive"),))] == 3
        assert m[("clusterfunk_raft_commit_index", ())] >= st["map_index"]
        assert m[("clusterfunk_owned_shards", ())] in (33, 34)


@pytest.mark.slow
def test_writes_need_the_token_on_real_nodes(cluster):
    code, out, err = ctl(cluster[1].management, "voters", "3")
    assert code == 1 and "401" in err and out == ""


@pytest.mark.slow
def test_endpoints_shards_raft_and_diag_on_real_nodes(cluster):
    """Every node publishes its management API as the endpoint clusterfunk.management
    (tag ep.clusterfunk.management) and its coordination port apart, as
    clusterfunk.coord; ctl shards, raft and diag agree with the cluster."""
    mgmt = {n.id: n.management for n in cluster}
    eps = ctl_json(cluster[0].management, "endpoints", "--name", "clusterfunk.management")
    assert {e["node"]: e["address"] for e in eps} == mgmt
    coord = ctl_json(cluster[1].management, "endpoints", "--name", "clusterfunk.coord")
    assert sorted(e["node"] for e in coord) == ["a", "b", "c"]
    assert not {e["address"] for e in coord} & set(mgmt.values())
    sh = ctl_json(cluster[2].management, "shards")
    assert sh["shards"] == SHARDS and sh["total_weight"] == SHARDS
    assert sorted(x["shards"] for x in sh["nodes"]) == [33, 33, 34]
    raft = ctl_json(cluster[0].management, "raft")
    assert sorted(raft["voters"]) == ["a", "b", "c"] and raft["nonvoters"] == {}
    leader = raft["leader"]
    progress = ctl_json(mgmt[leader], "raft")["progress"]
    assert sorted(p["node"] for p in progress) == sorted({"a", "b", "c"} - {leader})
    for n in cluster:
        d = ctl_json(n.management, "diag")
        assert d["ok"], d["problems"]
        assert d["last_reshard"]["nodes"] == ["a", "b", "c"]
    code, out, _err = ctl(cluster[0].management, "diag")
    assert code == 0 and "node a: consistent" in out and "last reshard: map index" in out


@pytest.mark.slow
def test_step_down_and_remove_through_a_follower(cluster):
    """Runs last: it kills a node of the module's cluster."""
    nodes = cluster
    by_id = {n.id: n for n in nodes}
    st = ctl_json(nodes[0].management, "status")
    old_leader, old_map = st["leader"], st["map_index"]
    follower = next(n for n in nodes if n.id != old_leader)
    code, out, err = ctl(follower.management, "step-down", "--json", "--timeout", "10",
                         token=TOKEN)
    assert code == 0, err
    assert json.loads(out)["node"] == old_leader  # forwarded to the leader
    for n in nodes:  # a new leader, and the map recommitted in its term
        n.until(lambda r: r["leader"] not in (None, old_leader)
                and r["state"] == "operational")
    st = ctl_json(follower.management, "status")
    new_leader = st["leader"]
    assert new_leader != old_leader
    deadline = time.monotonic() + 10
    while ctl_json(follower.management, "status")["map_index"] <= old_map:
        assert time.monotonic() < deadline, "map not recommitted"
        time.sleep(0.2)

    victim = next(n for n in nodes if n.id != new_leader)
    victim.stop(signal.SIGKILL)
    asker = next(n for n in nodes if n is not victim)
    code, out, err = ctl(asker.management, "remove", victim.id, token=TOKEN)
    assert code == 0, err
    # at once: well before gossip could declare the killed node dead by itself
    raft = ctl_json(asker.management, "raft")
    assert victim.id not in raft["voters"] and victim.id not in raft["nonvoters"]
    rest = sorted(set(by_id) - {victim.id})
    for n in nodes:
        if n is not victim:
            n.until(lambda r: r["nodes"] == rest)

    code, out, err = ctl(asker.management, "voters", "1", token=TOKEN)
    assert code == 0, err
    deadline = time.monotonic() + 10
    while len(ctl_json(asker.management, "raft")["voters"]) != 1:
        assert time.monotonic() < deadline, "voter count not reconciled to 1"
        time.sleep(0.2)
