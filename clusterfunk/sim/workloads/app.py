"""``--app demo`` of the ``cluster`` simulation workload: the demo service on every
member, simulated routing clients, and the application checks.

Every Raft member's :class:`~clusterfunk.cluster.assembly.ClusterNode` runs the demo
counter service (:class:`clusterfunk.demo.kv.CounterService`, a new, empty one at
each boot: its state lives in memory) behind the request server on port ``app``
(8600). Clients ``c1 .. cK`` (``--clients``, default 2) are simulated hosts running
the routing client that ships (:class:`clusterfunk.routing.client.HostClient`),
seeded with the first three members' request addresses. Each client issues requests
open-loop, as a Poisson process of ``--op-rate`` requests/s (default 20), on keys
``0 .. --keys - 1`` (default 100; shard ``key % shards``): ``incr`` (70 %) or ``get``,
each with a deadline of ``--op-timeout`` seconds (default 2). Clients stop issuing
one deadline before the end, so every request can end. Clients are not nemesis
targets (a paused or skewed client could not keep its own deadlines); a partition
leaves them in a group of their own, so during a partition no request reaches a node
and requests end with a deadline error.

Trace (docs/trace.md, "Demo clients"): ``client.call`` when a client starts a
request, ``client.request`` when it ends (``node`` = the client id). The checks are
:class:`clusterfunk.sim.checkers.app.AppChecker`, online, from trace records only.
"""

from __future__ import annotations

import argparse
import contextlib
import random
from typing import Any

from clusterfunk.demo import kv
from clusterfunk.routing.api import ForwardMode
from clusterfunk.routing.client import ClientConfig, Finished, HostClient
from clusterfunk.routing.server import ServerConfig
from clusterfunk.sim.checkers.app import AppChecker
from clusterfunk.sim.simulation import SimHost, Simulation

APP_PORT = 8600
APPS = ("none", "demo")


def add_arguments(parser: Any) -> None:
    """The ``--app`` options (``--clients``, ``--keys``, ``--op-rate`` and
    ``--op-timeout`` are shared with the raft workload: registered once)."""
    parser.add_argument("--app", choices=APPS,
                        help="cluster: run an application on every member (demo: the "
                             "sharded counter service, with simulated routing clients)")
    parser.add_argument("--forward", choices=[m.value for m in ForwardMode],
                        help="cluster --app: a node asked for a shard it does not serve "
                             "answers moved, or forwards to the owner (moved)")
    for flag, kind, text in (
        ("--clients", int, "simulated clients (raft 3; cluster --app 2)"),
        ("--keys", int, "distinct keys (raft 4; cluster --app 100)"),
        ("--op-rate", float, "requests/s per client (raft 10, between ops; cluster --app "
                             "20, open loop)"),
        ("--op-timeout", float, "a request's deadline in s (raft 3; cluster --app 2)"),
    ):
        with contextlib.suppress(argparse.ArgumentError):
            parser.add_argument(flag, type=kind, help=text)


class DemoApp:
    """The demo service and its clients in one cluster simulation."""

    def __init__(self, args: argparse.Namespace, members: list[str], n_shards: int) -> None:
        self.seed = int(getattr(args, "seed", 0) or 0)
        self.clients = getattr(args, "clients", None) or 2
        self.keys = getattr(args, "keys", None) or 100
        self.rate = float(getattr(args, "op_rate", None) or 20.0)
        self.timeout = float(getattr(args, "op_timeout", None) or 2.0)
        self.forward = ForwardMode(getattr(args, "forward", None) or ForwardMode.MOVED)
        #: the request server's configuration on every member
        self.server_config = ServerConfig(forward=self.forward)
        duration = float(getattr(args, "duration", 60.0) or 60.0)
        if self.clients < 0 or self.keys < 1 or self.rate <= 0 or self.timeout <= 0:
            raise ValueError("--clients >= 0, --keys >= 1, --op-rate > 0, --op-timeout > 0")
        self.stop_at = duration - self.timeout
        self.members = members
        self.n_shards = n_shards
        self.names = [f"c{i}" for i in range(1, self.clients + 1)]
        self.seeds = [f"{m}:{APP_PORT}" for m in members[:3]]
        self.checker = AppChecker()
        self.sim: Simulation | None = None
        self.hosts: dict[str, HostClient] = {}
        self.rngs: dict[str, random.Random] = {}
        #: client -> Finished events that came before the request() call returned
        self._early: dict[str, list[Finished]] = {}
        self._calling: str | None = None
        self._ops: dict[tuple[str, int], tuple[int, str]] = {}  # (client, id) -> key, op

    def service(self, host: SimHost) -> kv.CounterService:
        """A new, empty service for each boot of a member (its state is in memory)."""
        return kv.CounterService()

    def setup(self, sim: Simulation) -> None:
        self.sim = sim
        sim.tracer.listeners.append(self.checker)
        for name in self.names:
            self.rngs[name] = random.Random(f"{self.seed}/app/{name}/requests")
            sim.add_node(name, self._client)
            sim.at(self.rngs[name].expovariate(self.rate), self._issue, name)

    def _client(self, host: SimHost) -> HostClient:
        name = host.name
        rng = random.Random(f"{self.seed}/app/{name}/{host.incarnation}/client")
        hc = HostClient(host, self.seeds, client_id=name, config=ClientConfig(), rng=rng,
                        on_finished=lambda ev: self._finished(name, ev))
        self.hosts[name] = hc
        return hc

    def _issue(self, name: str) -> None:
        sim = self.sim
        assert sim is not None
        if sim.now >= self.stop_at:
            return
        rng = self.rngs[name]
        sim.after(rng.expovariate(self.rate), self._issue, name)
        if not sim.alive(name):
            return
        key = rng.randrange(self.keys)
        op = "incr" if rng.random() < 0.7 else "get"
        payload = kv.incr() if op == "incr" else kv.get()
        self._calling = name
        self._early[name] = []
        try:
            rid = self.hosts[name].request(key, payload, self.timeout)
        finally:
            self._calling = None
        self._ops[(name, rid)] = (key, op)
        sim.tracer.emit(name, "client.call", {
            "client": name, "id": rid, "key": key, "shard": key % self.n_shards, "op": op,
            "deadline": self.timeout,
        })
        for ev in self._early.pop(name):
            self._emit_end(name, ev)

    def _finished(self, name: str, ev: Finished) -> None:
        if self._calling == name:
            self._early[name].append(ev)  # before its client.call: emitted after it
        else:
            self._emit_end(name, ev)

    def _emit_end(self, name: str, ev: Finished) -> None:
        assert self.sim is not None
        key, op = self._ops.pop((name, ev.id), (-1, ""))
        fields: dict[str, Any] = {"client": name, "id": ev.id, "key": key,
                                  "shard": key % self.n_shards, "op": op}
        if ev.ok:
            try:
                value = kv.decode_reply(ev.payload)
            except ValueError as exc:
                fields.update(outcome="failed", reason="bad_reply", error=str(exc))
            else:
                fields.update(outcome="ok", result=value)
        else:
            fields.update(outcome="failed", reason=ev.outcome, error=ev.error)
        fields.update(served_by=ev.node, attempts=ev.attempts)
        self.sim.tracer.emit(name, "client.request", fields)

    def finish(self, sim: Simulation) -> tuple[dict[str, Any], list[str]]:
        self.checker.finish(sim.now)
        summary = self.checker.summary(sim.now)
        summary["clients"] = self.clients
        summary["forward"] = self.forward.value
        return summary, self.checker.violations()
