"""Three ``clusterfunk raft-node`` processes on loopback with SQLite: SIGKILL the
leader, a new one is elected, no acknowledged write is lost, and the killed
process restarts from its database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from clusterfunk.raft import kv
from clusterfunk.raft.client import ClientError, SyncClient
from clusterfunk.runtime.net import free_port
from clusterfunk.sim.checkers.raft import SafetyChecker


class Cluster:
    def __init__(self, tmp, n: int = 3, store: str = "sqlite", tls_dir=None) -> None:
        self.tmp = tmp
        self.store = store
        self.tls = ["--tls-dir", str(tls_dir)] if tls_dir is not None else ["--insecure"]
        self.raft = {f"n{i}": f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}
        self.client = {k: f"127.0.0.1:{free_port()}" for k in self.raft}
        self.procs: dict[str, subprocess.Popen] = {}
        self.crashed_at: dict[str, list[int]] = {}

    def start(self, sid: str) -> None:
        peers = ",".join(f"{k}={v}" for k, v in self.raft.items())
        cmd = [
            sys.executable,
            "-m",
            "clusterfunk",
            "raft-node",
            *self.tls,
            "--id",
            sid,
            "--bind",
            self.raft[sid],
            "--peers",
            peers,
            "--data-dir",
            str(self.tmp / sid),
            "--store",
            self.store,
            "--client-bind",
            self.client[sid],
            "--election-timeout",
            "0.3",
            "--trace",
            str(self.trace(sid)),
        ]
        p = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.procs[sid] = p
        line = p.stdout.readline()
        assert line, p.stderr.read()
        ready = json.loads(line)
        assert ready["ready"] and ready["id"] == sid and ready["client"] == self.client[sid]

    def trace(self, sid: str):
        return self.tmp / f"{sid}.jsonl"

    def kill(self, sid: str) -> None:
        p = self.procs.pop(sid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.crashed_at.setdefault(sid, []).append(self.trace(sid).stat().st_size)

    def audit(self) -> SafetyChecker:
        """Feed every node's trace to the safety checker (a SIGKILL becomes a
        ``sim.crash`` record: the next incarnation applies from the start again)."""
        checker = SafetyChecker(sorted(self.raft))
        for sid in sorted(self.raft):
            data = self.trace(sid).read_bytes()
            cuts = self.crashed_at.get(sid, [])
            pos = 0
            for cut in [*cuts, len(data)]:
                for line in data[pos:cut].splitlines():
                    if line.strip():  # a SIGKILL may cut the last line short
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue
                        checker(rec)
                if cut != len(data):
                    checker({"t": 0, "node": "sim", "ev": "sim.crash", "target": sid})
                pos = cut
        return checker

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()

    def leader(self, among: list[str], timeout: float = 10.0) -> str:
        """Ask a write through a client that follows redirects; return who answered."""
        c = SyncClient({k: self.client[k] for k in among}, timeout=timeout)
        try:
            c.request(kv.encode_get("probe"), deadline=time.monotonic() + timeout)
            assert c.leader is not None
            return c.leader
        finally:
            c.close()


@pytest.fixture
def cluster(tmp_path):
    cl = Cluster(tmp_path)
    try:
        yield cl
    finally:
        for p in cl.procs.values():
            p.kill()
            p.wait(5)


def test_sigkill_leader_new_leader_and_no_acknowledged_write_lost(cluster):
    for sid in cluster.raft:
        cluster.start(sid)
    first = cluster.leader(list(cluster.raft))
    acked: dict[str, str] = {}
    with SyncClient(cluster.client, timeout=5) as c:
        for i in range(30):
            c.request(kv.encode_put(f"k{i}", f"v{i}"))
            acked[f"k{i}"] = f"v{i}"
        # Pipelined writes: acknowledged only when the reply came back.
        replies = c.pipeline([kv.encode_put(f"p{i}", f"w{i}") for i in range(200)], window=32)
        assert len(replies) == 200
        acked.update({f"p{i}": f"w{i}" for i in range(200)})
        assert c.request(kv.encode_cas("k0", "v0", "v0b")) is True
        acked["k0"] = "v0b"

    cluster.kill(first)
    survivors = [s for s in cluster.raft if s != first]
    second = cluster.leader(survivors)
    assert second != first

    with SyncClient({k: cluster.client[k] for k in survivors}, timeout=5) as c:
        for key, value in acked.items():
            assert c.request(kv.encode_get(key)) == value, key
        assert c.request(kv.encode_get("k1"), read=True) == "v1"  # ReadIndex path
        c.request(kv.encode_put("after", "kill"))

    # The killed node restarts from its SQLite database (it must open it cleanly
    # after SIGKILL) and the three serve on.
    cluster.start(first)
    with SyncClient(cluster.client, timeout=5) as c:
        assert c.request(kv.encode_get("after")) == "kill"
        assert c.request(kv.encode_get("p199")) == "w199"
    cluster.stop_all()
    # The audit trail of the real processes: Election Safety and State Machine
    # Safety hold across the kill and the restart.
    audit = cluster.audit()
    assert audit.violations == [], audit.violations
    assert audit.elections >= 2 and len(audit.leaders) >= 2
    assert len(audit.applied) >= 230  # 30 + 200 + cas + gets, plus config and no-ops


def test_bad_client_frames_close_only_that_connection(cluster):
    for sid in cluster.raft:
        cluster.start(sid)
    leader = cluster.leader(list(cluster.raft))
    host, _, port = cluster.client[leader].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"\xff\xff\xff\xff garbage")
        s.settimeout(5)
        assert s.recv(100) == b""  # closed by the node
    with SyncClient(cluster.client, timeout=5) as c:
        c.request(kv.encode_put("still", "alive"))
        assert c.request(kv.encode_get("still")) == "alive"
        with pytest.raises(ClientError) as ei:  # above max_proposal_bytes: refused, clearly
            c.request(kv.encode_put("big", "x" * (2 << 20)))
        assert ei.value.status == "error" and "exceeds the limit" in str(ei.value.detail)
        assert c.request(kv.encode_get("big")) is None
    cluster.stop_all()


def test_tls_raft_nodes_serve_only_clients_with_a_cluster_certificate(tmp_path):
    """--tls-dir: mutual TLS on the Raft port and on the KV client port."""
    import ssl

    from clusterfunk.runtime.tls import load_tls_dir
    from clusterfunk.security.certs import write_certs

    write_certs(tmp_path / "certs", ["n1", "n2", "n3"])
    write_certs(tmp_path / "other", ["n1"])
    c = Cluster(tmp_path, tls_dir=tmp_path / "certs")
    try:
        for sid in c.raft:
            c.start(sid)
        ctx = load_tls_dir(tmp_path / "certs", "client").client_context
        with SyncClient(c.client, timeout=5.0, ssl_context=ctx) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.request(kv.encode_put("k", "v"))
                    break
                except (ClientError, OSError):
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert client.request(kv.encode_get("k"), read=True) == "v"
        # a plain client, and a client with another CA's certificate, are refused
        for bad in (None, load_tls_dir(tmp_path / "other", "client").client_context):
            with SyncClient(c.client, timeout=2.0, ssl_context=bad) as intruder:
                try:
                    intruder.request(kv.encode_put("k", "forged"))
                except (ClientError, OSError, ssl.SSLError):
                    pass
                else:
                    raise AssertionError("a client without a cluster certificate was served")
        # regression: a client failing the TLS handshake ended the node (its error
        # escaped the connection's nursery in an ExceptionGroup)
        assert all(p.poll() is None for p in c.procs.values())
        with SyncClient(c.client, timeout=5.0, ssl_context=ctx) as client:
            assert client.request(kv.encode_get("k"), read=True) == "v"
    finally:
        c.stop_all()
