"""A cluster node whose disk is slow, as its own process (run by test_slow_disk.py).

    python -m tests.cluster.slow_node DATA_DIR DELAY thread|blocking COUNT

Every SQLite sync sleeps DELAY seconds. ``blocking`` swaps the worker-thread
persister for a synchronous one (what the node did before the persistence seam),
to show that the test can fail. Prints JSON lines: ``{"gossip": addr}`` once
bound, ``{"ready": true}`` when it leads a 3-node map, ``{"done": true, "syncs": n}``
after COUNT proposals (100 a second) are committed; then waits for stdin to close.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import asynccontextmanager
from typing import Any

import trio

import clusterfunk.node as node_mod
from clusterfunk.raft.errors import RaftError
from clusterfunk.raft.persist import SyncPersister
from clusterfunk.raft.sqlite_store import SQLiteStorage
from tests.cluster.test_slow_disk import node_options


def main() -> None:
    data_dir, delay, mode, count = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    syncs = [0]
    real_sync = SQLiteStorage.sync

    def slow_sync(self: SQLiteStorage) -> None:
        time.sleep(delay)
        syncs[0] += 1
        real_sync(self)

    SQLiteStorage.sync = slow_sync  # type: ignore[method-assign]
    if mode == "blocking":

        @asynccontextmanager
        async def blocking(storage: Any) -> Any:
            yield SyncPersister(storage)

        node_mod.open_persister = blocking  # type: ignore[assignment]

    async def run() -> None:
        async with node_mod.Cluster("a", data_dir=data_dir, **node_options()) as a:
            print(json.dumps({"gossip": a.addresses["gossip"]}), flush=True)
            with trio.fail_after(30):
                while not (a.role() == "leader" and a.state() == "operational"
                           and len(a.nodes()) == 3):
                    await trio.sleep(0.05)
            node = a.node
            assert node is not None and node.raft is not None and node.raft_driver is not None
            start = node.raft.commit_index
            print(json.dumps({"ready": True}), flush=True)
            lost = False
            for _ in range(count):
                try:
                    node.raft_driver.call(lambda core, now: core.propose(now, b"load"))
                except RaftError:  # a blocked loop can cost the leadership
                    lost = True
                    break
                await trio.sleep(0.01)
            with trio.fail_after(30):
                while not lost and node.raft.commit_index < start + count:
                    await trio.sleep(0.05)
            print(json.dumps({"done": True, "syncs": syncs[0], "lost_leadership": lost}),
                  flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)

    trio.run(run)


if __name__ == "__main__":
    main()
