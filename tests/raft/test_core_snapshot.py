"""Snapshots, log compaction and InstallSnapshot in chunks (paper section 7)."""

from __future__ import annotations

from clusterfunk.raft import kv
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.events import SnapshotRestored
from clusterfunk.raft.messages import InstallSnapshot

CFG = RaftConfig(snapshot_threshold=20, trailing_logs=5, snapshot_chunk_bytes=64)


def test_compaction_keeps_trailing_entries(make_net):
    net = make_net(["n1", "n2", "n3"], config=CFG)
    net.elect("n1")
    for i in range(25):
        net.propose("n1", kv.encode_put(f"k{i}", "v" * 10))
        net.deliver_all()
    c = net["n1"]
    assert c.snapshot_index >= 20
    assert c.log.base_index == c.snapshot_index - 5
    meta, data = net.storages["n1"].snapshot
    assert meta.index == c.snapshot_index and meta.config.voters == c.configuration.voters
    restored = kv.KVStore()
    restored.restore(data)
    assert restored.get("k0") == "v" * 10


def test_install_snapshot_in_chunks_to_a_lagging_follower(make_net):
    net = make_net(["n1", "n2", "n3"], config=CFG)
    net.elect("n1")
    net.advance(0.3)
    net.crash("n3")
    for i in range(60):
        net.propose("n1", kv.encode_put(f"k{i}", f"value-{i}"))
        net.deliver_all()
    assert net["n1"].log.base_index > net["n3"].last_index
    net.restart("n3")
    net.advance(1.0)
    chunks = [m for d, s, m in net.delivered if d == "n3" and isinstance(m, InstallSnapshot)]
    assert len(chunks) > 2  # 64-byte chunks
    assert [c.offset for c in chunks] == sorted(c.offset for c in chunks)
    assert chunks[-1].done
    assert any(isinstance(e, SnapshotRestored) for e in net.events["n3"])
    assert ("n3", "raft.snapshot") in [(s, ev) for s, ev, f in net.trace]
    assert net.sms["n3"].data == net.sms["n1"].data
    assert net["n3"].commit_index == net["n1"].commit_index
    net.propose("n1", kv.encode_put("after", "x"))
    net.advance(0.5)
    assert net.sms["n3"].get("after") == "x"


def test_snapshot_survives_restart(make_net):
    net = make_net(["n1"], config=CFG)
    net.advance(2.5)
    for i in range(30):
        net.propose("n1", kv.encode_put(f"k{i}", "v"))
    net.advance(0.1)
    net.crash("n1")
    net.restart("n1")
    assert net.sms["n1"].data == {f"k{i}": "v" for i in range(30)}
    assert ("n1", "raft.snapshot") in [(s, ev) for s, ev, f in net.trace]
