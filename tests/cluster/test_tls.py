"""Issue 11: a cluster whose Raft and coordination ports run mutual TLS.

In-process nodes with certificates from ``clusterfunk certs`` form a cluster; a
node whose certificate comes from another CA never gets into Raft or the map; a
node holding a valid certificate of the cluster CA in another name, claiming to
be a member, has every Raft and coordination message dropped; and the process
commands refuse to start without ``--tls-dir`` or an explicit ``--insecure``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from clusterfunk import wire
from clusterfunk.raft.messages import Heartbeat, RequestVote
from clusterfunk.runtime.net import open_transport
from clusterfunk.runtime.tls import TLSConfig, load_tls_dir
from clusterfunk.security.certs import write_certs
from tests.cluster.test_node import _node, _wait


async def test_tls_cluster_forms_and_a_foreign_ca_node_stays_out(tmp_path: Path) -> None:
    good, other = tmp_path / "good", tmp_path / "other"
    write_certs(good, ["a", "b", "c", "evil"])
    write_certs(other, ["m"])
    tls = {n: load_tls_dir(good, n) for n in ("a", "b", "c")}
    async with _node("a", [], tls=tls["a"]) as a:
        seed = [a.addresses["gossip"]]
        async with (
            _node("b", seed, tls=tls["b"]) as b,
            _node("c", seed, tls=tls["c"]) as c,
            _node("m", seed, tls=load_tls_dir(other, "m")) as m,
        ):
            nodes = [a, b, c]
            await _wait(lambda: all(n.state() == "operational" and sorted(n.nodes()) ==
                                    ["a", "b", "c"] for n in nodes), timeout=30)
            raft = a.raft_core
            assert raft is not None
            await trio.sleep(2.0)  # m keeps trying: its handshakes fail both ways
            assert "m" not in a.nodes()
            assert m.state() != "operational" and m.shard_map() is None
            # the leader counts failed handshakes on its Raft port
            assert a.node is not None
            stats = [d.transport.stats for d in a.node.drivers.values() if d is not None]
            assert sum(s.tls_failures for s in stats) > 0


async def test_a_cluster_ca_certificate_in_another_name_cannot_speak_for_a_member(
    tmp_path: Path,
) -> None:
    """A valid certificate of the cluster CA named "evil", used by a process that
    claims to be member "b": its forged Raft messages (a higher term) are dropped,
    and the leader and term stay as they were."""
    good = tmp_path / "good"
    write_certs(good, ["a", "b", "evil"])
    async with _node("a", [], tls=load_tls_dir(good, "a")) as a:
        seed = [a.addresses["gossip"]]
        async with _node("b", seed, tls=load_tls_dir(good, "b")) as b:
            await _wait(lambda: sorted(a.nodes()) == ["a", "b"] and b.state() == "operational",
                        timeout=30)
            assert a.raft_core is not None and a.node is not None
            term = a.raft_core.term
            evil = TLSConfig(good / "ca.pem", good / "evil.pem", good / "evil-key.pem", "evil")
            forged = [
                wire.encode(Heartbeat(term + 5, "b", 0, 0)),
                wire.encode(RequestVote(term + 5, "b", 10**6, term + 4, False, True)),
            ]
            async with open_transport("127.0.0.1:0", tls=evil, node_id="b") as t:
                t.bind(_Ignore())
                for _ in range(20):
                    for frame in forged:
                        t.send_frame(a.addresses["raft"], frame)
                    await trio.sleep(0.05)
            await trio.sleep(0.5)
            assert a.role() == "leader" and a.raft_core.term == term
            rstats = a.node.drivers["raft"].transport.stats
            dropped = rstats.identity_mismatch + rstats.frames_dropped_identity
            assert dropped > 0 or a.node.drivers["raft"].stats.unauthorized > 0


class _Ignore:
    def on_datagram(self, src: str, data: bytes) -> None: ...

    def on_frame(self, src: str, data: bytes) -> None: ...


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clusterfunk", *argv], capture_output=True,
                          text=True, timeout=60)


def test_process_commands_need_tls_or_an_explicit_insecure(tmp_path: Path) -> None:
    for argv in (
        ["cluster-node", "--id", "a", "--in-memory"],
        ["raft-node", "--id", "n1", "--bind", "127.0.0.1:1", "--peers", "n1=127.0.0.1:1",
         "--data-dir", str(tmp_path)],
    ):
        r = _run(*argv)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--tls-dir" in lines[0] and "--insecure" in lines[0], r.stderr
    r = _run("cluster-node", "--id", "a", "--in-memory", "--tls-dir", str(tmp_path / "none"),
             "--management-port", "0", "--gossip-port", "0", "--raft-port", "0",
             "--coord-port", "0")
    assert r.returncode == 2 and "--tls-dir" in r.stderr and len(r.stderr.splitlines()) == 1
