"""The ``cluster`` simulation workload: ``clusterfunk simulate --protocol cluster``.

Every node ``n1 .. nN`` runs three drivers (gossip on 7946, Raft on 8300, the
coordinator on 8400) joined by :class:`~clusterfunk.cluster.glue.NodeGlue`. Gossip
joins through ``n1 .. n3``; ``n1`` bootstraps a one-voter Raft cluster (on its first
boot only: later boots recover from ``host.disk``), everybody else waits to be added
by the leader. Options: ``--shards`` (10,000), ``--shard-weights uniform|random``
(random: integer weights 1..10 drawn from the seed), ``--nonmembers K`` (the last K
nodes are gossip-only clients), ``--voters`` (3), ``--gossip-profile``
(``lan``/``local``/``wan``), ``--settle`` (seconds without faults before the end
after which the final convergence check applies, default 70: a healed partition
merges through gossip's reconnect, every 30 s on each side), ``--election-timeout``.

Checkers (violations fail the run):

* Raft safety (:class:`clusterfunk.sim.checkers.raft.SafetyChecker`, online, logs
  inspected every ``check_every`` seconds);
* every committed map (first ``cluster.shardmap`` ``committed`` record of an index)
  decodes to its digest, owns every shard exactly once with a node of its list,
  and is balanced (max load - min load <= the largest shard weight), and every node
  of it had its ``cluster.ack`` of that proposal counted before the commit;
* every node that applied the commit of a proposal index has the same digest and
  node list;
* at the end, if no fault happened in the last ``settle`` seconds: every live node
  is ``operational`` with the same committed map, and its nodes are exactly the
  live Raft members (gossip-only clients are operational but in no map).

``--app demo`` (:mod:`clusterfunk.sim.workloads.app`) runs the demo sharded service
on every member, with simulated routing clients, and adds its checks (exclusive
ownership, ok requests served by the owner, no acknowledged counter write lost,
every request ended within its deadline) and counts (``app`` in the summary).

Summary: reshard count (distinct committed maps), time from each membership change
(start, crash, restart) to the first committed map that reflects it (median, max,
list), shards moved per reshard, virtual seconds per wall second.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from typing import Any

import attrs

from clusterfunk.cluster.assembly import ClusterNode
from clusterfunk.cluster.coordinator import (
    OPERATIONAL,
    CoordinatorConfig,
    fit_timing,
)
from clusterfunk.cluster.messages import map_digest
from clusterfunk.gossip.config import profile
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.roles import Role
from clusterfunk.sharding import ShardMap, ShardMapDecodeError
from clusterfunk.sim.checkers.raft import SafetyChecker
from clusterfunk.sim.raft_storage import SimPersister, SimStorage
from clusterfunk.sim.simulation import SimHost, Simulation
from clusterfunk.sim.workloads import app as app_workload
from clusterfunk.sim.workloads.raft import CoreLogView

GOSSIP_PORT = 7946
RAFT_PORT = 8300
SEEDS = 3


class MapChecker:
    """Trace listener: committed maps are valid and agreed (module docstring)."""

    def __init__(self, wl: ClusterWorkload) -> None:
        self.wl = wl
        self.violations: list[str] = []
        self.committed: dict[int, tuple[str, tuple[str, ...]]] = {}  # index -> digest, nodes
        self.proposed: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.moved: list[int] = []
        self.order: list[int] = []  # proposal indexes in first-commit order
        self.acks: dict[int, set[str]] = {}  # proposal index -> nodes whose ack was counted

    def __call__(self, rec: dict[str, Any]) -> None:
        if rec["ev"] == "cluster.ack":
            self.acks.setdefault(rec["index"], set()).add(rec["from"])
            return
        if rec["ev"] != "cluster.shardmap":
            return
        index = rec["index"]
        key = (rec["digest"], tuple(rec["nodes"]))
        table = self.committed if rec["phase"] == "committed" else self.proposed
        first = table.get(index)
        if first is None:
            table[index] = key
            if rec["phase"] == "committed":
                self.order.append(index)
                self.moved.append(rec["moved"])
                # the ack rule: a map is committed only once every node of it acked
                unacked = [n for n in rec["nodes"] if n not in self.acks.get(index, ())]
                if unacked:
                    self.violations.append(f"t={rec['t']}: map at {index} committed before "
                                           f"{unacked} acked it")
                self._validate(rec)
                self.wl._on_commit(rec)
        elif first != key:
            self.violations.append(
                f"t={rec['t']}: {rec['node']} {rec['phase']} map at {index} is {key[0]} "
                f"{list(key[1])}, others had {first[0]} {list(first[1])}"
            )

    def _validate(self, rec: dict[str, Any]) -> None:
        app = self.wl.sim.app(rec["node"]) if self.wl.sim is not None else None
        where = f"t={rec['t']}: committed map at {rec['index']}"
        if app is None or app.coord.committed is None or \
                app.coord.committed.index != rec["index"]:
            self.violations.append(f"{where}: not found on {rec['node']}")
            return
        blob = app.coord.committed.blob
        if map_digest(blob) != rec["digest"]:
            self.violations.append(f"{where}: digest mismatch")
            return
        try:
            m = ShardMap.decode(blob)
        except ShardMapDecodeError as exc:
            self.violations.append(f"{where}: undecodable: {exc}")
            return
        nodes = tuple(rec["nodes"])
        if tuple(m.nodes) != nodes:
            self.violations.append(f"{where}: map nodes {m.nodes} != entry nodes {nodes}")
        if m.n_shards != self.wl.n_shards:
            self.violations.append(f"{where}: {m.n_shards} shards, expected {self.wl.n_shards}")
        owners = m.owners()
        allowed = set(nodes)
        bad = [s for s, o in enumerate(owners) if o not in allowed]
        if bad:
            self.violations.append(f"{where}: {len(bad)} shards without a valid owner")
        loads = m.loads()
        if loads and nodes:
            spread = max(loads.values()) - min(loads.values())
            if spread > m.max_weight:
                self.violations.append(f"{where}: unbalanced (load spread {spread})")


class ClusterWorkload:
    """``--protocol cluster``; see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.nodes: int = args.nodes
        self.duration: float = float(getattr(args, "duration", 60.0) or 60.0)
        self.n_shards: int = getattr(args, "shards", None) or 10_000
        self.weights_kind: str = getattr(args, "shard_weights", None) or "uniform"
        self.weights: int | list[int] = self.n_shards
        if self.weights_kind == "random":  # integer weights 1..10, from the run's seed
            wrng = random.Random(f"{getattr(args, 'seed', 0)}/shard-weights")
            self.weights = [wrng.randint(1, 10) for _ in range(self.n_shards)]
        elif self.weights_kind != "uniform":
            raise ValueError(
                f"--shard-weights must be uniform or random, not {self.weights_kind!r}"
            )
        voters = getattr(args, "voters", None) or 3
        # planted bugs (simulate --mutant)
        mutants: frozenset[str] = getattr(args, "mutants", frozenset())
        self.gossip_config = attrs.evolve(
            profile(getattr(args, "gossip_profile", None) or "lan"), mutants=mutants)
        election = getattr(args, "election_timeout", None) or 1.0
        self.raft_config = RaftConfig(election_timeout=election, heartbeat_interval=election / 10,
                                      mutants=mutants)
        # the lease bounds scale with T (docs/cluster.md; the node checks them): the
        # defaults fit T = 1 s and are kept for any shorter T
        rc = self.raft_config
        self.coord_config = fit_timing(
            CoordinatorConfig(voters=voters, mutants=mutants),
            heartbeat_period=rc.member_heartbeat_period, election_timeout=election,
            max_clock_drift=rc.max_clock_drift)
        settle = getattr(args, "settle", None)
        # a healed partition merges through gossip's reconnect (every 30 s on each side
        # in the LAN profile), which can take up to about a minute
        self.settle: float = 70.0 if settle is None else float(settle)
        # the pairwise log comparison is O(nodes^2) per check point
        self.check_every: float = getattr(args, "check_every", None) or max(1.0, self.nodes / 10)
        self.names = [f"n{i}" for i in range(1, self.nodes + 1)]
        k = getattr(args, "nonmembers", None) or 0
        if not 0 <= k < self.nodes:
            raise ValueError("--nonmembers must be in 0 .. nodes - 1 (n1 bootstraps Raft)")
        #: Raft members (hold shards); the last ``--nonmembers`` nodes are gossip-only
        self.members = self.names[: self.nodes - k]
        self.seeds = [f"n{i}:{GOSSIP_PORT}" for i in range(1, min(SEEDS, self.nodes) + 1)]
        self.bootstrap = {"n1": f"n1:{RAFT_PORT}"}
        self.sim: Simulation | None = None
        self.safety = SafetyChecker(self.names, self._read_log, apply_committed=True)
        self.maps = MapChecker(self)
        self.last_fault = 0.0
        self.partitioned = False
        self.changes: list[dict[str, Any]] = []  # membership changes awaiting a map
        self.latencies: list[dict[str, Any]] = []
        self.states: dict[str, str] = {}
        self.superseded = 0
        self._wall0 = 0.0
        app = getattr(args, "app", None) or "none"
        self.app: app_workload.DemoApp | None = (
            app_workload.DemoApp(args, self.members, self.n_shards) if app == "demo" else None
        )

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--shards", type=int, help="cluster: number of shards (10000)")
        parser.add_argument("--voters", type=int, help="cluster: target Raft voters (3)")
        parser.add_argument(
            "--nonmembers", type=int,
            help="cluster: the last K nodes are gossip-only clients, role nonmember (0)",
        )
        parser.add_argument(
            "--shard-weights", choices=("uniform", "random"),
            help="cluster: every shard weight 1, or random integers 1..10 (uniform)",
        )
        # --gossip-profile may be registered already by the gossip workload (same dest)
        with contextlib.suppress(argparse.ArgumentError):
            parser.add_argument(
                "--gossip-profile", dest="gossip_profile", choices=("lan", "wan", "local"),
                help="gossip configuration profile (default lan)",
            )
        parser.add_argument(
            "--settle", type=float,
            help="cluster: fault-free seconds before the end for the final check (70)",
        )
        with contextlib.suppress(argparse.ArgumentError):
            parser.add_argument("--election-timeout", type=float,
                                help="Raft election timeout T in s (1.0)")
        with contextlib.suppress(argparse.ArgumentError):
            parser.add_argument("--check-every", type=float,
                                help="log safety check period in s")
        app_workload.add_arguments(parser)

    def fault_targets(self, sim: Simulation) -> list[str]:
        return list(self.names)

    def _read_log(self, name: str) -> CoreLogView | None:
        assert self.sim is not None
        app = self.sim.app(name)
        if app is None or app.raft is None:
            return None
        return CoreLogView(app.raft)

    def factory(self, host: SimHost) -> ClusterNode:
        """The node assembly that ships (:class:`~clusterfunk.cluster.assembly.ClusterNode`),
        on the simulated host. ``n1`` bootstraps on its first boot only; later boots
        recover from ``host.disk``."""
        name, seed, incarnation = host.name, host.sim.seed, host.incarnation

        def rng(what: str) -> random.Random:
            return random.Random(f"{seed}/cluster/{name}/{incarnation}/{what}")

        storage = SimStorage(host.disk)
        member = name in self.members
        app: dict[str, Any] = {}
        if self.app is not None and member:
            app = {"service": self.app.service(host), "server_config": self.app.server_config}
        return ClusterNode(
            host,
            storage=storage,
            persister=SimPersister.for_host(host, storage),
            rng=rng,
            weights=self.weights,
            gossip_config=self.gossip_config,
            raft_config=self.raft_config,
            coord_config=self.coord_config,
            bootstrap=self.bootstrap if incarnation == 1 else None,
            member=member,
            seeds=self.seeds,
            **app,
        )

    def setup(self, sim: Simulation) -> None:
        self.sim = sim
        sim.tracer.listeners.append(self._feed)
        for n in self.names:
            sim.add_node(n, self.factory)
        self.changes.append({"t": 0.0, "kind": "start", "target": None})
        if self.app is not None:
            self.app.setup(sim)

        def check() -> None:
            self.safety.check_logs(sim.now)
            sim.after(self.check_every, check)

        sim.at(self.check_every, check)
        self._wall0 = time.perf_counter()

    # -- trace feed ------------------------------------------------------------------

    def _feed(self, rec: dict[str, Any]) -> None:
        ev = rec["ev"]
        if ev.startswith("raft.") or ev == "sim.crash":
            self.safety(rec)
        if ev.startswith("cluster."):
            if ev in ("cluster.shardmap", "cluster.ack"):
                self.maps(rec)
            elif ev == "cluster.state":
                self.states[rec["node"]] = rec["state"]
            return
        if ev.startswith("sim.") and ev not in ("sim.start", "sim.end"):
            self.last_fault = rec["t"]
            if ev == "sim.partition":
                self.partitioned = True
            elif ev == "sim.heal":
                self.partitioned = False
            elif ev in ("sim.crash", "sim.restart", "sim.add"):
                self._on_change(rec["t"], ev[4:], rec["target"])

    def _on_change(self, t: float, kind: str, target: str) -> None:
        """A membership change to time: a crash of a node in the current map, a
        (re)start of a node that is not. A change undone before any map reflected it
        (a restart after a crash) is dropped from the pending list and counted."""
        if kind == "crash":
            self.states[target] = "down"
        if target not in self.members:
            return  # a gossip-only client: never in the map
        before = len(self.changes)
        self.changes = [c for c in self.changes if c["target"] != target]
        self.superseded += before - len(self.changes)
        current = set(self.maps.committed[self.maps.order[-1]][1]) if self.maps.order else set()
        if (kind == "crash") == (target in current):
            self.changes.append({"t": t, "kind": kind, "target": target})

    def _on_commit(self, rec: dict[str, Any]) -> None:
        """Match the first committed map that reflects each pending membership change."""
        nodes = set(rec["nodes"])
        assert self.sim is not None
        keep = []
        for ch in self.changes:
            target = ch["target"]
            if ch["kind"] == "start":
                done = nodes == set(self.members)
            elif ch["kind"] == "crash":
                done = target not in nodes or self.sim.alive(target)
            else:
                done = target in nodes or not self.sim.alive(target)
            if done:
                self.latencies.append({
                    "kind": ch["kind"], "target": target, "at": ch["t"],
                    "seconds": round(rec["t"] - ch["t"], 3), "moved": rec["moved"],
                })
            else:
                keep.append(ch)
        self.changes = keep

    # -- end of run ------------------------------------------------------------------

    def settled_check(self, sim: Simulation) -> tuple[bool, list[str]]:
        """The final convergence check (module docstring). Returns (applied, violations)."""
        if self.partitioned or sim.now - self.last_fault < self.settle:
            return False, []
        problems: list[str] = []
        live = [n for n in self.names if sim.alive(n) and not sim.hosts[n].paused]
        digests: dict[str, str] = {}
        live_members = [n for n in live if n in self.members]
        for n in live:
            c = sim.app(n).coord
            if c.state != OPERATIONAL:
                problems.append(f"settled: {n} is {c.state} ({c.role})")
            if n not in self.members:
                continue  # gossip-only clients do not follow the log
            if c.committed is None:
                problems.append(f"settled: {n} has no committed map")
                continue
            digests[n] = c.committed.digest
            if sorted(c.committed.nodes) != sorted(live_members):
                problems.append(
                    f"settled: {n}'s map has nodes {list(c.committed.nodes)}, "
                    f"live members are {live_members}"
                )
        if len(set(digests.values())) > 1:
            problems.append(f"settled: nodes disagree on the map: {digests}")
        return True, problems

    def live_violations(self) -> list[str]:
        """What the in-run checkers found so far (``simulate --stop-at-violation``)."""
        found = list(self.safety.violations) + list(self.maps.violations)
        if self.app is not None:
            found += self.app.checker.violations()
        return found

    def finish(self, sim: Simulation) -> dict[str, Any]:
        wall = time.perf_counter() - self._wall0
        self.safety.check_logs(sim.now)
        applied, settled = self.settled_check(sim)
        violations = list(self.safety.violations) + list(self.maps.violations) + settled
        app_summary = None
        if self.app is not None:
            app_summary, app_violations = self.app.finish(sim)
            violations += app_violations
        secs = [x["seconds"] for x in self.latencies]
        moved = self.maps.moved
        leader = None
        for n in self.names:
            app = sim.app(n)
            if app is not None and app.raft is not None and app.raft.role == Role.LEADER:
                leader = n
        final = None
        if leader is not None:
            c = sim.app(leader).coord
            if c.committed is not None:
                final = {"index": c.committed.index, "nodes": len(c.committed.nodes),
                         "digest": c.committed.digest}
            voters = sorted(sim.app(leader).raft.configuration.voters)
        else:
            voters = []
        return {
            "shards": self.n_shards,
            "shard_weights": self.weights_kind,
            "reshards": len(moved),
            "leader": leader,
            "voters": voters,
            "final_map": final,
            "change_to_map_median_s": round(statistics.median(secs), 3) if secs else None,
            "change_to_map_max_s": round(max(secs), 3) if secs else None,
            "changes": self.latencies[:50],
            "unreflected_changes": [
                {"kind": c["kind"], "target": c["target"], "at": c["t"]} for c in self.changes
            ],
            "superseded_changes": self.superseded,
            "moved_per_reshard": moved[:100],
            "moved_median": statistics.median(moved) if moved else None,
            "settled_check": "applied" if applied else "skipped (faults too close to the end)",
            "states": dict(sorted(self.states.items(), key=lambda kv: int(kv[0][1:]))),
            "speed_x": round(sim.now / wall, 1) if wall > 0 else None,
            "safety": self.safety.summary(),
            **({"app": app_summary} if app_summary is not None else {}),
            "violations": violations,
        }
