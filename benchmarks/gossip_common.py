"""Helpers shared by the gossip benchmarks (simulated clusters, real processes)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from queue import Empty, Queue
from typing import Any

from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.gossip import GossipWorkload

#: Serf (LAN profile) measured on this machine, median over survivors (issue 4).
SERF_LAN = {"5": "6.9-8.8 s", "50": "9.6 s (8.0 s in another run)"}


def sim_cluster(seed: int, nodes: int, *, loss: float = 0.0, profile: str = "lan",
                tracer: Any = None) -> tuple[Simulation, GossipWorkload]:
    kw = {"tracer": tracer} if tracer is not None else {}
    sim = Simulation(seed, link=LinkConfig(loss=loss), **kw)
    wl = GossipWorkload(argparse.Namespace(nodes=nodes, duration=0.0, gossip_profile=profile))
    wl.setup(sim)
    return sim, wl


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None, "min": None, "n": 0}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
            "min": round(min(values), 3), "n": len(values)}


class NodeProc:
    """One ``clusterfunk gossip-node`` process whose JSON Lines are read by a thread."""

    def __init__(self, name: str, seeds: str = "", profile: str = "lan") -> None:
        cmd = [sys.executable, "-m", "clusterfunk", "gossip-node", "--name", name,
               "--bind", "127.0.0.1:0", "--profile", profile]
        if seeds:
            cmd += ["--seeds", seeds]
        self.name = name
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.q: Queue[tuple[float, dict[str, Any]]] = Queue()
        self.seen: list[tuple[float, dict[str, Any]]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            if line.strip():
                self.q.put((time.monotonic(), json.loads(line)))

    def poll(self) -> None:
        while True:
            try:
                self.seen.append(self.q.get_nowait())
            except Empty:
                return

    def wait(self, pred: Any, timeout: float) -> tuple[float, dict[str, Any]] | None:
        for item in self.seen:
            if pred(item[1]):
                return item
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.q.get(timeout=0.1)
            except Empty:
                continue
            self.seen.append(item)
            if pred(item[1]):
                return item
        return None

    def alive_view(self) -> int:
        view: dict[str, str] = {}
        for _, r in self.seen:
            if r.get("ev") == "member":
                view[r["member"]] = r["status"]
        return sum(1 for s in view.values() if s == "alive")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
        if self.p.stdout is not None:
            self.p.stdout.close()


def emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))
