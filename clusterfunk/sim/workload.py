"""Workloads: what ``clusterfunk simulate --protocol NAME`` runs.

A workload builds the nodes of a simulation (``n1 .. nN``), may schedule its own
clients, attaches online checkers to the tracer, and reports a summary. Workloads
are found by name in :data:`WORKLOADS` (``"module:Class"`` strings, imported
lazily so that one protocol's import errors never break another's).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Protocol

from clusterfunk.sim.simulation import Simulation

WORKLOADS: dict[str, str] = {
    "ping": "clusterfunk.sim.workloads.ping:PingWorkload",
    "raft": "clusterfunk.sim.workloads.raft:RaftWorkload",
    "gossip": "clusterfunk.sim.workloads.gossip:GossipWorkload",
    "cluster": "clusterfunk.sim.workloads.cluster:ClusterWorkload",
}


class Workload(Protocol):
    """The interface a protocol's simulation workload implements."""

    #: Hosts that a random nemesis may crash, pause or skew (default: all nodes).
    def fault_targets(self, sim: Simulation) -> list[str]: ...

    def setup(self, sim: Simulation) -> None:
        """Add nodes ``n1 .. nN`` with ``sim.add_node`` and schedule clients."""

    def finish(self, sim: Simulation) -> dict[str, Any]:
        """Called after the run. Return the summary; its ``"violations"`` key
        (a list of strings) decides the exit status."""
        ...


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """Let every importable workload add its own ``simulate`` options."""
    for name in WORKLOADS:
        cls = load_workload(name, quiet=True)
        if cls is not None and hasattr(cls, "add_arguments"):
            group = parser.add_argument_group(f"--protocol {name}")
            cls.add_arguments(group)


def load_workload(name: str, quiet: bool = False) -> Any:
    """The workload class for ``name`` (None if ``quiet`` and it cannot be imported)."""
    try:
        target = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(WORKLOADS)}") from None
    mod_name, _, cls_name = target.partition(":")
    try:
        return getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError):
        if quiet:
            return None
        raise
