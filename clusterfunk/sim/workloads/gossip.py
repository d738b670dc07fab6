"""The ``gossip`` simulation workload: ``clusterfunk simulate --protocol gossip``.

Every node ``n1 .. nN`` runs a :class:`~clusterfunk.gossip.core.GossipCore` on
port 7946 and joins through the first three nodes (the seeds). Faults come from
the global options (``--crash n7@300``, ``--nemesis``, ``--loss``, ...); online
trackers (:mod:`clusterfunk.sim.checkers.gossip`) watch the trace as it is written.

Summary: failure detection times (crash -> ``dead`` at each survivor: median and
max, and the time until *every* survivor decided), false positives, packets and
bytes per member per second, convergence time after each partition heals.

Violations:

* a **false positive**: a live, reachable member declared ``dead`` by anyone
  (outside the excuse windows of :mod:`clusterfunk.sim.checkers.gossip`, whose grace
  is the detection bound below);
* a **missed detection**: a crashed member not declared ``dead`` by a survivor
  within the detection bound, checked only when the bound's whole window fits in
  the run, the target stayed down, the survivor stayed up and unpaused, and no
  partition was active (Lifeguard slows a partitioned observer on purpose).

The detection bound (seconds), for ``n`` members and a profile::

    bound = (n + 1) x probe_interval            # someone probes the dead member
          + suspicion_max_timeout_mult x suspicion_mult x max(1, log10 n)
            x probe_interval                    # unconfirmed suspicion runs out
          + 10 x gossip_interval x ceil(log10(n + 1))   # the verdict spreads
          + 2 x probe_interval                  # slack for clock ticks

(override with ``--detect-bound``). Round-robin probing makes every member probe
every other within ``n - 1`` periods, so the first term bounds the first
suspicion; Lifeguard's suspicion timeout never exceeds its maximum.
"""

from __future__ import annotations

import argparse
import math
import random
from typing import Any

import attrs

from clusterfunk.gossip.assembly import GossipMember
from clusterfunk.gossip.config import GossipConfig, profile
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.events import MEMBER_EVENTS, QueryDone, QueryResponse
from clusterfunk.gossip.keyring import (
    KeyResult,
    Keyring,
    SecureCodec,
    check_key,
    collect_key_result,
    query_name,
    seeded_nonces,
)
from clusterfunk.gossip.messages import Status
from clusterfunk.runtime.driver import Driver
from clusterfunk.sim.checkers.gossip import (
    ConvergenceTracker,
    DetectionTracker,
    FalsePositiveTracker,
    detection_summary,
    load,
)
from clusterfunk.sim.simulation import SimHost, Simulation

PORT = 7946
#: Nodes every other node joins through (at most this many of n1, n2, ...).
SEEDS = 3
#: The default cluster key of simulated keyrings (``--gossip-keyring``).
SIM_KEY = bytes(range(32))


def detection_bound(config: GossipConfig, n: int) -> float:
    """The documented bound on crash -> dead at every survivor (module docstring)."""
    pi = config.probe_interval
    suspicion_max = (
        config.suspicion_max_timeout_mult * config.suspicion_mult * max(1.0, math.log10(n)) * pi
    )
    spread = 10 * config.gossip_interval * math.ceil(math.log10(n + 1))
    return (n + 1) * pi + suspicion_max + spread + 2 * pi


class GossipSimNode:
    """What a simulated gossip node's factory returns (``sim.app(name)``).

    ``events``: the node's public events except the membership ones
    (:data:`~clusterfunk.gossip.events.MEMBER_EVENTS`), which the trace has as
    ``gossip.member`` records: a mass join of n nodes publishes n^2 of them, and
    keeping them all alive costs memory and, through the garbage collector's full
    passes over every live object, a quarter of the join's CPU time."""

    def __init__(self, core: GossipCore, driver: Driver, codec: SecureCodec | None) -> None:
        self.core = core
        self.driver = driver
        self.codec = codec
        self.events: list[Any] = []
        core.member_events = False  # (not made at all: n^2 snapshots in a mass join)
        driver.subscribe(self._keep)

    def _keep(self, event: Any) -> None:
        if type(event) not in MEMBER_EVENTS:
            self.events.append(event)

    def call(self, fn: Any) -> Any:
        return self.driver.call(fn)

    # Queries, synchronously (the simulator runs them to completion in virtual time).

    def query(self, name: str, payload: bytes = b"", **kw: Any) -> int:
        """Start a query (keywords as ``GossipCore.query``); returns its id."""
        return self.call(lambda core, now: core.query(now, name, payload, **kw))

    def responses(self, qid: int) -> dict[str, bytes]:
        """Responses to query ``qid`` received so far, by member."""
        return {e.node: e.payload for e in self.events if type(e) is QueryResponse and e.id == qid}

    def query_done(self, qid: int) -> QueryDone | None:
        for e in self.events:
            if type(e) is QueryDone and e.id == qid:
                return e
        return None

    def key_op(self, op: str, key: bytes, timeout: float | None = None) -> int:
        """Start a cluster-wide key operation (install/use/remove); returns the query id."""
        if self.codec is None or not self.codec.encrypt:
            raise ValueError("key rotation by query needs an encrypting keyring")
        return self.query(query_name(op), check_key(key), timeout=timeout, want_ack=False)

    def key_result(self, op: str, qid: int) -> KeyResult:
        expected = sum(1 for m in self.core.members() if m.status == Status.ALIVE)
        return collect_key_result(op, self.responses(qid), expected)


def build_node(
    host: SimHost,
    config: GossipConfig,
    seeds: list[str],
    *,
    keyring_keys: list[bytes] | None = None,
    encrypt: bool = True,
    tags: dict[str, str] | None = None,
) -> GossipSimNode:
    """Create one gossip node on ``host`` (port 7946) that joins through ``seeds``.

    With ``keyring_keys`` every packet is sealed (or authenticated) with a keyring
    whose nonces come from a seeded RNG (per host and incarnation), so runs stay
    deterministic. A restarted node starts from ``keyring_keys`` again.
    """
    ring = Keyring(keyring_keys) if keyring_keys is not None else None
    nonce_rng = random.Random(f"{host.sim.seed}/keyring/{host.name}/{host.incarnation}")
    member = GossipMember(
        host, rng=host.rng, config=config, tags=tags, keyring=ring, encrypt=encrypt,
        nonce=seeded_nonces(nonce_rng), seeds=seeds,
    )
    return GossipSimNode(member.core, member.driver, member.codec)


class GossipWorkload:
    """``--protocol gossip``; see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.nodes: int = args.nodes
        self.config = attrs.evolve(  # planted bugs (simulate --mutant)
            profile(getattr(args, "gossip_profile", None) or "lan"),
            mutants=getattr(args, "mutants", frozenset()),
        )
        bound = getattr(args, "detect_bound", None)
        self.bound = float(bound) if bound else detection_bound(self.config, self.nodes)
        self.keyring = bool(getattr(args, "gossip_keyring", False))
        self.encrypt = not bool(getattr(args, "gossip_no_encrypt", False))
        self.duration: float = float(getattr(args, "duration", 60.0) or 60.0)
        self.detect = DetectionTracker()
        self.fps = FalsePositiveTracker(self.bound)
        self.converge = ConvergenceTracker()
        self.drivers: list[Driver] = []
        self.codecs: list[SecureCodec] = []
        # Intervals during which a partition was active (for the detection check).
        self._partitions: list[list[float]] = []
        self._pauses: dict[str, list[list[float]]] = {}

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        try:
            parser.add_argument(
                "--profile",
                "--gossip-profile",
                dest="gossip_profile",
                choices=("lan", "wan", "local"),
                help="gossip configuration profile (gossip; default lan)",
            )
        except argparse.ArgumentError:  # another workload owns --profile
            parser.add_argument(
                "--gossip-profile",
                dest="gossip_profile",
                choices=("lan", "wan", "local"),
                help="gossip configuration profile (default lan)",
            )
        parser.add_argument(
            "--detect-bound",
            type=float,
            metavar="SECONDS",
            help="gossip: crash -> dead bound checked at every survivor (default: derived)",
        )
        parser.add_argument(
            "--gossip-keyring",
            action="store_true",
            default=None,
            help="gossip: seal every packet with a keyring (AES-GCM)",
        )
        parser.add_argument(
            "--gossip-no-encrypt",
            action="store_true",
            default=None,
            help="gossip: with --gossip-keyring, authenticate only (no encryption)",
        )

    def fault_targets(self, sim: Simulation) -> list[str]:
        return sim.names

    def setup(self, sim: Simulation) -> None:
        seeds = [f"n{i}:{PORT}" for i in range(1, min(SEEDS, self.nodes) + 1)]
        keys = [SIM_KEY] if self.keyring else None

        def factory(host: SimHost) -> GossipSimNode:
            node = build_node(host, self.config, seeds, keyring_keys=keys, encrypt=self.encrypt)
            self.drivers.append(node.driver)
            if node.codec is not None:
                self.codecs.append(node.codec)
            return node

        for i in range(1, self.nodes + 1):
            sim.add_node(f"n{i}", factory)
        sim.tracer.listeners.append(self._feed)

    def _feed(self, rec: dict[str, Any]) -> None:
        ev = rec["ev"]
        if ev == "gossip.member":  # the bulk of a run's records (a mass join: n^2)
            detect = self.detect
            if rec["status"] == "dead":  # the only status the false-positive check reads
                detect.feed(rec)
                self.fps.feed(rec)
            elif detect.dead_views:  # any other status only ends a dead view held
                detect.feed(rec)
            self.converge.feed(rec)
        elif ev.startswith("sim."):
            self.detect.feed(rec)
            self.fps.feed(rec)
            self.converge.feed(rec)
            t = rec["t"]
            if ev == "sim.partition":
                if not self._partitions or self._partitions[-1][1] != math.inf:
                    self._partitions.append([t, math.inf])
            elif ev == "sim.heal":
                if self._partitions and self._partitions[-1][1] == math.inf:
                    self._partitions[-1][1] = t
            elif ev == "sim.pause":
                self._pauses.setdefault(rec["target"], []).append([t, math.inf])
            elif ev in ("sim.resume", "sim.crash"):
                spans = self._pauses.get(rec["target"])
                if spans and spans[-1][1] == math.inf:
                    spans[-1][1] = t

    def _disturbed(self, spans: list[list[float]], t0: float, t1: float) -> bool:
        return any(a <= t1 and b >= t0 for a, b in spans)

    def finish(self, sim: Simulation) -> dict[str, Any]:
        violations: list[str] = []
        crashes = self.detect.result()
        end = sim.now
        for c in crashes:
            if c.restarted or c.t + self.bound > end:
                continue
            if self._disturbed(self._partitions, c.t, c.t + self.bound):
                continue
            for s, d in c.delays.items():
                if d is not None and d <= self.bound:
                    continue
                if self._disturbed(self._pauses.get(s, []), c.t, c.t + self.bound):
                    continue
                got = "never" if d is None else f"after {d:.1f}s"
                violations.append(
                    f"t={c.t}: {c.target} crashed; {s} declared it dead {got} "
                    f"(bound {self.bound:.1f}s)"
                )
        for r in self.fps.found:
            violations.append(
                f"t={r['t']}: false positive: {r['node']} declared live {r['member']} dead "
                f"(incarnation {r['incarnation']})"
            )
        summary: dict[str, Any] = {
            "profile": self._profile_name(),
            "detection_bound_s": round(self.bound, 3),
            **detection_summary(crashes),
            "false_positives": len(self.fps.found),
            "convergence_after_heal_s": self.converge.result(),
            **load([d.stats for d in self.drivers], self.nodes, end),
        }
        if self.codecs:
            summary["keyring_auth_failed"] = sum(c.stats.auth_failed for c in self.codecs)
        summary["malformed"] = sum(d.stats.malformed for d in self.drivers)
        summary["oversize"] = sum(d.stats.oversize for d in self.drivers)
        summary["violations"] = violations
        return summary

    def _profile_name(self) -> str:
        for name in ("lan", "wan", "local"):
            if profile(name) == attrs.evolve(self.config, mutants=frozenset()):
                return name
        return "custom"
