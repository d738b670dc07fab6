"""Issue 8: a node whose disk is slow (every SQLite sync takes 50 ms) still answers
gossip probes on time (400 proposals committed through 50 ms and 250 ms syncs, never
suspected), because its Raft writes are synced in a worker thread
(runtime/persist.py), never on the event loop that also answers probes.

The slow node runs as its own process (in one process a blocked loop would stop
the observers too, and nobody could notice); two observers in this process probe
it while it commits 400 proposals, and must never suspect it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from clusterfunk.cluster.coordinator import CoordinatorConfig
from clusterfunk.gossip.config import LOCAL
from clusterfunk.node import Cluster
from clusterfunk.raft.config import RaftConfig
from clusterfunk.trace import Tracer

ROOT = Path(__file__).resolve().parents[2]


def node_options() -> dict[str, Any]:
    """Shared by the observers and the slow node (tests/cluster/slow_node.py)."""
    return {
        "shards": 60, "gossip_port": 0, "raft_port": 0, "coord_port": 0,
        "raft_config": RaftConfig(election_timeout=1.0, heartbeat_interval=0.1),
        "coord_config": CoordinatorConfig(reshard_delay=0.1, ack_timeout=2.0),
        # probes every 0.2 s, an ack due within 0.1 s: a loop blocked for 50 ms per
        # sync, many times a second, misses acks and gets suspected
        "gossip_config": attrs.evolve(LOCAL, probe_interval=0.2, probe_timeout=0.1,
                                      gossip_interval=0.05),
    }


async def _accusations_of_slow_node(
    tmp_path: Path, mode: str, delay: float, count: int
) -> tuple[list[Any], dict[str, Any]]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.cluster.slow_node", str(tmp_path / "a"), str(delay), mode,
         str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    buf = b""

    async def line() -> dict[str, Any]:
        nonlocal buf
        while b"\n" not in buf:
            chunk = await proc.stdout.receive_some(4096)  # type: ignore[union-attr]
            assert chunk, "the slow node exited"
            buf += chunk
        first, _, buf = buf.partition(b"\n")
        return dict(json.loads(first))

    tracer = Tracer(time.monotonic, keep=True)
    try:
        with trio.fail_after(90):
            seed = [(await line())["gossip"]]
            async with (
                Cluster("b", seeds=seed, tracer=tracer, **node_options()),
                Cluster("c", seeds=seed, tracer=tracer, **node_options()),
            ):
                assert await line() == {"ready": True}
                mark = len(tracer.records)
                done = await line()
                window = tracer.records[mark:]
    finally:
        await proc.stdin.aclose()
        with trio.move_on_after(10):
            await proc.wait()
        proc.kill()
    accused = [r for r in window if r["ev"] == "gossip.member" and r.get("member") == "a"
               and r.get("status") in ("suspect", "dead")]
    return accused, done


@pytest.mark.parametrize("delay", [0.05, 0.25])
async def test_slow_fsync_does_not_get_a_node_suspected(tmp_path: Path, delay: float) -> None:
    accused, done = await _accusations_of_slow_node(tmp_path, "thread", delay, 400)
    assert done["syncs"] >= 10  # the disk really was in the way, often
    assert not done["lost_leadership"]
    assert accused == []


@pytest.mark.slow
async def test_the_same_node_syncing_on_its_event_loop_is_suspected(tmp_path: Path) -> None:
    """The control: with the synchronous persister (the node before the seam) and
    250 ms syncs, the observers do suspect it: the check is not blind. (At 50 ms a
    blocked loop still answers most probes in the gaps between syncs.)"""
    accused, done = await _accusations_of_slow_node(tmp_path, "blocking", 0.25, 40)
    assert done["syncs"] >= 10
    assert accused, "a node blocked 250 ms per sync was never suspected: the test is blind"
