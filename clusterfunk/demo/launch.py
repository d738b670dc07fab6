"""Real ``cluster-node --app demo`` processes on loopback, for ``clusterfunk demo``,
``benchmarks/routing.py`` and the tests.

:func:`open_local_cluster` (``async with``) starts nodes as child processes of this
Trio program; each node's stdout (one JSON line per (state, role) change, see
``clusterfunk cluster-node``) is read by a task of the cluster's nursery, so
:meth:`LocalCluster.wait_operational` awaits an event instead of polling. Each node
gets free loopback ports (gossip, Raft, coordination, requests) and an in-memory
Raft log; node ``n1`` bootstraps, later nodes join through a live node's gossip
port. Stderr goes to ``<workdir>/<id>.err`` (and, with ``trace``, the node's trace
to ``<workdir>/<id>.jsonl``). Leaving the ``async with`` stops every
node that still runs (SIGTERM: a graceful leave; SIGKILL after ``stop_grace``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from clusterfunk.runtime.net import free_port

HOST = "127.0.0.1"


@attrs.define
class NodeProc:
    """One node process and what it last reported."""

    id: str
    ports: dict[str, int]
    proc: trio.Process
    state: str = ""
    role: str = ""
    leader: str | None = None
    nodes: list[str] = attrs.Factory(list)
    management: str = ""
    exited: bool = False

    @property
    def app_address(self) -> str:
        return f"{HOST}:{self.ports['app']}"

    @property
    def gossip_address(self) -> str:
        return f"{HOST}:{self.ports['gossip']}"


def node_argv(node_id: str, ports: dict[str, int], join: Sequence[str], shards: int,
              app: str = "demo", extra: Sequence[str] = ()) -> list[str]:
    """The command line of one demo node."""
    argv = [
        sys.executable, "-m", "clusterfunk", "cluster-node", "--insecure", "--in-memory",
        "--id", node_id, "--shards", str(shards), "--app", app,
        "--gossip-port", str(ports["gossip"]), "--raft-port", str(ports["raft"]),
        "--coord-port", str(ports["coord"]), "--app-port", str(ports["app"]),
        "--management-port", "0", "--log-level", "warning",
    ]
    for seed in join:
        argv += ["--join", seed]
    return argv + list(extra)


class LocalCluster:
    """Demo nodes run by this process (see the module docstring)."""

    def __init__(self, nursery: trio.Nursery, workdir: Path, shards: int,
                 extra: Sequence[str] = (), stop_grace: float = 10.0,
                 trace: bool = False) -> None:
        self.nursery = nursery
        self.workdir = workdir
        self.shards = shards
        self.extra = list(extra)
        self.trace = trace
        self.stop_grace = stop_grace
        self.nodes: dict[str, NodeProc] = {}
        self._changed = trio.Event()
        self._seq = 0

    def trace_path(self, node_id: str) -> Path:
        """Where node ``node_id`` writes its trace (with ``trace=True``)."""
        return self.workdir / f"{node_id}.jsonl"

    def live(self) -> list[NodeProc]:
        return [n for n in self.nodes.values() if not n.exited]

    def next_id(self) -> str:
        self._seq += 1
        return f"n{self._seq}"

    async def start(self, node_id: str | None = None) -> NodeProc:
        """Start one node (joining through the live nodes, or bootstrapping if none)."""
        node_id = node_id or self.next_id()
        ports = {name: free_port(HOST) for name in ("gossip", "raft", "coord", "app")}
        join = [n.gossip_address for n in self.live()][:3]
        extra = list(self.extra)
        if self.trace:
            extra += ["--trace", str(self.trace_path(node_id))]
        argv = node_argv(node_id, ports, join, self.shards, extra=extra)
        with open(self.workdir / f"{node_id}.err", "ab") as err:
            proc = await trio.lowlevel.open_process(
                argv, stdout=subprocess.PIPE, stderr=err,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        node = NodeProc(node_id, ports, proc)
        self.nodes[node_id] = node
        self.nursery.start_soon(self._read, node)
        return node

    async def _read(self, node: NodeProc) -> None:
        assert node.proc.stdout is not None
        buf = b""
        async with node.proc.stdout:
            while True:
                try:
                    data = await node.proc.stdout.receive_some(65536)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    data = b""
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._on_line(node, line)
        await node.proc.wait()
        node.exited = True
        self._notify()

    def _on_line(self, node: NodeProc, line: bytes) -> None:
        try:
            rec: dict[str, Any] = json.loads(line)
        except ValueError:
            return
        node.state = str(rec.get("state", ""))
        node.role = str(rec.get("role", ""))
        node.leader = rec.get("leader")
        node.nodes = list(rec.get("nodes") or [])
        node.management = str(rec.get("management", ""))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pred: Any, timeout: float = math.inf) -> bool:
        """Await ``pred()`` (re-checked at every report of a node); False on timeout."""
        with trio.move_on_after(timeout):
            while not pred():
                await self._changed.wait()
            return True
        return False

    def operational(self, ids: Sequence[str] | None = None) -> bool:
        """Every live node (or ``ids``) reports ``operational`` with exactly the live
        nodes (or ``ids``) in its map."""
        want = sorted(ids) if ids is not None else sorted(n.id for n in self.live())
        nodes = [self.nodes[i] for i in want] if ids is not None else self.live()
        return bool(nodes) and all(
            n.state == "operational" and sorted(n.nodes) == want and not n.exited
            for n in nodes
        )

    async def wait_operational(self, timeout: float = 60.0) -> None:
        if not await self.wait_for(self.operational, timeout):
            states = {n.id: (n.state, n.nodes, n.exited) for n in self.nodes.values()}
            raise TimeoutError(f"the demo cluster did not settle in {timeout} s: {states} "
                               f"(logs in {self.workdir})")

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[node_id]
        if node.proc.returncode is None:
            node.proc.send_signal(sig)

    async def stop(self, node_id: str) -> None:
        """SIGTERM (graceful leave), SIGKILL after ``stop_grace``; wait for the exit."""
        node = self.nodes[node_id]
        if node.proc.returncode is None:
            node.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(self.stop_grace):
                await node.proc.wait()
            if node.proc.returncode is None:
                node.proc.kill()
        await node.proc.wait()

    async def stop_all(self) -> None:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as n:
                for node_id in list(self.nodes):
                    n.start_soon(self.stop, node_id)


@asynccontextmanager
async def open_local_cluster(
    n: int, shards: int = 1000, workdir: str | Path | None = None,
    extra: Sequence[str] = (), settle: float | None = 60.0, trace: bool = False,
) -> AsyncIterator[LocalCluster]:
    """Start ``n`` demo nodes (one after the other, ``n1`` first) and, unless
    ``settle`` is None, wait until they all serve one map of all of them. With
    ``trace``, node ``X`` writes its JSON Lines trace to ``<workdir>/X.jsonl``."""
    with tempfile.TemporaryDirectory(prefix="clusterfunk-demo-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            lc = LocalCluster(nursery, root, shards, extra, trace=trace)
            try:
                first = await lc.start()
                # the others join through n1: wait until it answers gossip
                await lc.wait_for(lambda: first.state != "" or first.exited, 30.0)
                for _ in range(n - 1):
                    await lc.start()
                if settle is not None:
                    await lc.wait_operational(settle)
                yield lc
            finally:
                await lc.stop_all()
                nursery.cancel_scope.cancel()
