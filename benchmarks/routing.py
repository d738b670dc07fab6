"""Routed requests on real processes (issue 9): throughput, latency, and a node lost
and another added under load.

    python benchmarks/routing.py --nodes 5 --clients 2 --duration 20 --kill-one --json

1. ``n1`` alone (``cluster-node --app demo``, the demo counter service; every node
   writes its trace): ``--clients`` routing clients, each with ``--concurrency``
   request loops (one request in flight each, ``incr`` or ``get`` on random keys,
   deadline ``--timeout``), for ``--single`` seconds: **req/s of one node**.
2. ``n2 .. nN`` join; once all serve one map, the same load for ``--duration``
   seconds: **req/s of N nodes** over the part before any fault. With
   ``--kill-one``, at 30 % of the run a random node other than ``n1`` is SIGKILLed,
   and at 50 % a new node is started (it joins; the map grows back).
   Meanwhile a probe measures, interleaved one by one on the same keys, a routed
   request (the routing client) and a **direct request to the owner** (a bare
   connection that sends the request frame straight to the owner's request port
   and waits for its reply: no client library, no map, no retry): the cost of
   routing is routed p50 / direct p50 - 1.
3. The nodes' traces are merged by time and read by the audit's shard-ownership
   check (:class:`clusterfunk.audit.shards.ShardOwnership`): **misrouted** counts
   ``app.request`` records answered ``ok`` by a node that did not serve the shard at
   that moment, ``ownership_violations`` two nodes serving a shard at once;
   **reshards** counts the maps committed during the run.

Output (``--json``): ``requests``, ``ok``, ``failed`` (client requests of phase 2
that did not end ok), ``misrouted``, ``p50_us``, ``p99_us`` (ok requests of phase 2),
``reshards``; ``failed_before_deadline`` (failed requests that ended before their
deadline, e.g. an ``error`` answer: 0 means every failure is a deadline that passed),
``failed_by_reason``, ``direct_p50_us`` / ``direct_p99_us`` and
``routed_probe_p50_us`` / ``routed_probe_p99_us``, ``routing_overhead_p50_pct``,
``rps_one_node``, ``rps_n_nodes``, and the machine's load average (the numbers are
only as good as the machine is quiet).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from clusterfunk.audit.reader import read
from clusterfunk.audit.shards import ShardOwnership
from clusterfunk.demo import kv
from clusterfunk.demo.launch import HOST, open_local_cluster
from clusterfunk.routing.api import APP
from clusterfunk.routing.auth import routing_authorizer
from clusterfunk.routing.messages import Reply, Request
from clusterfunk.routing.trio_client import Client, open_client
from clusterfunk.runtime.api import Outbox, Output
from clusterfunk.runtime.trio_host import open_host


@attrs.define
class Tally:
    """Ends of the load clients' requests in one phase."""

    ok: int = 0
    latencies: list[float] = attrs.Factory(list)
    failed: int = 0
    early: int = 0  # failed before the deadline
    reasons: dict[str, int] = attrs.Factory(dict)
    t0: float = 0.0
    t1: float = 0.0
    ok_before_fault: int = 0


def pct_us(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p * len(s)))] * 1e6, 1)


class Load:
    """The load clients' request loops; :attr:`tally` is the phase being counted."""

    def __init__(self, keys: int, timeout: float) -> None:
        self.keys = keys
        self.timeout = timeout
        self.tally = Tally()
        self.fault_at = float("inf")

    async def loop(self, client: Client, rng: random.Random) -> None:
        while True:
            key = rng.randrange(self.keys)
            payload = kv.get() if rng.random() < 0.25 else kv.incr()
            ev = await client.finish(key, payload, self.timeout)
            t, tally = trio.current_time(), self.tally
            if ev.ok:
                tally.ok += 1
                tally.latencies.append(ev.latency)
                if t < self.fault_at:
                    tally.ok_before_fault += 1
            else:
                tally.failed += 1
                tally.reasons[ev.outcome] = tally.reasons.get(ev.outcome, 0) + 1
                if ev.outcome == "error" or ev.latency < self.timeout * 0.999:
                    tally.early += 1


class DirectCore(Outbox):
    """The baseline: a core that sends one request frame to a given address and
    reports the reply -- the same runtime, transport and wire as the routing client,
    without its routing (no map, no owner lookup, no retries, no deadline timers)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_id = 1
        self._out = Output()

    def start(self, now: float) -> None:
        pass

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        if isinstance(msg, Reply):
            self._out.events.append(msg)

    def on_tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float:
        return math.inf

    def send(self, now: float, address: str, key: int, payload: bytes, budget: float) -> int:
        rid = self.next_id
        self.next_id += 1
        self._out.send(address, Request(self.name, rid, key, payload, budget, 0, 1), True)
        return rid


class DirectClient:
    """Requests straight to a given node (:class:`DirectCore` on a Trio host)."""

    def __init__(self, host: Any, name: str) -> None:
        self.core = DirectCore(name)
        self.driver = host.driver(self.core, APP,
                                  authorizer=routing_authorizer(require_identity=False))
        self.driver.subscribe(self._on_event)
        self.waiting: dict[int, trio.Event] = {}
        self.replies: dict[int, Reply] = {}

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Reply) and ev.id in self.waiting:
            self.replies[ev.id] = ev
            self.waiting.pop(ev.id).set()

    async def request(self, address: str, key: int, payload: bytes,
                      timeout: float) -> tuple[Reply | None, float]:
        """Send one request to ``address``; (its reply or None on timeout, seconds)."""
        t0 = time.perf_counter()
        rid = self.driver.call(lambda c, now: c.send(now, address, key, payload, timeout))
        done = self.waiting[rid] = trio.Event()
        with trio.move_on_after(timeout):
            await done.wait()
        self.waiting.pop(rid, None)
        return self.replies.pop(rid, None), time.perf_counter() - t0


@asynccontextmanager
async def open_direct(name: str) -> AsyncIterator[DirectClient]:
    async with open_host(name, {APP: f"{HOST}:0"}, advertise={APP: f"{HOST}:0"},
                         rng=random.Random(0)) as host:
        client = DirectClient(host, name)
        host.start()
        yield client


async def probe(routed: Client, direct: DirectClient, keys: int, timeout: float,
                out: dict[str, list[float]], rng: random.Random) -> None:
    """A routed and a direct request on the same key (owner per the routed client's
    map), one at a time, in alternating order, forever; record the ok latencies,
    both timed the same way (around the awaited call)."""
    turn = 0
    while True:
        key = rng.randrange(keys)
        owner = routed.core.owner(key)
        address = routed.core.endpoints.get(owner or "", "")
        if not address:
            await trio.sleep(0.05)  # no map yet: a benchmark may wait
            continue
        payload = kv.get()
        turn += 1
        for which in (("routed", "direct") if turn % 2 else ("direct", "routed")):
            if which == "routed":
                t0 = time.perf_counter()
                ev = await routed.finish(key, payload, timeout)
                if ev.ok:
                    out["routed"].append(time.perf_counter() - t0)
            else:
                reply, secs = await direct.request(address, key, payload, timeout)
                if reply is not None and reply.outcome == "ok":
                    out["direct"].append(secs)
                else:
                    out["direct_failed"].append(secs)


def audit_traces(traces: list[Path], t0: float, t1: float,
                 kills: list[tuple[float, str]]) -> dict[str, int]:
    """Misrouted ok answers and ownership clashes in the nodes' merged traces (files
    that do not exist are skipped: a node killed before it wrote any), and
    the maps committed within [t0, t1] (Unix time). ``kills`` are (Unix time, node)
    of the SIGKILLs sent: a killed process serves nothing from then on, which the
    check learns from a ``sim.crash`` record put in the stream at that time."""
    paths = []
    for path in traces:
        if path.exists():
            _drop_cut_line(path)
            paths.append(str(path))
    check = ShardOwnership(limit=20)
    misrouted = clashes = requests = 0
    maps: set[int] = set()
    crashes = [({"t": t, "node": "sim", "ev": "sim.crash", "target": n}, "SIGKILL")
               for t, n in sorted(kills)]
    for rec, where in heapq.merge(read(paths), crashes, key=lambda rw: rw[0]["t"]):
        ev = rec["ev"]
        if ev == "cluster.shardmap" and rec["phase"] == "committed" and t0 <= rec["t"] <= t1:
            maps.add(rec["index"])
        if not (ev.startswith("shard.") or ev in ("app.request", "sim.crash")):
            continue
        before = check.count
        check.feed(rec, where)
        if ev == "app.request":
            requests += 1
            misrouted += check.count - before
        else:
            clashes += check.count - before
    for v in check.violations:
        print(f"audit: {v.line()}", file=sys.stderr)
    return {"misrouted": misrouted, "ownership_violations": clashes,
            "traced_requests": requests, "reshards": len(maps)}


def _drop_cut_line(path: Path) -> None:
    """A SIGKILLed node may leave its trace's last line half written: drop it."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clusterfunk-routing-") as tmp:
        return await _bench(args, Path(args.workdir or tmp))


async def _bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    load = Load(args.keys, args.timeout)
    result: dict[str, Any] = {"nodes": args.nodes, "clients": args.clients,
                              "concurrency": args.concurrency, "duration": args.duration}
    samples: dict[str, list[float]] = {"routed": [], "direct": [], "direct_failed": []}
    async with open_local_cluster(1, shards=args.shards, workdir=workdir,
                                  trace=True) as lc, trio.open_nursery() as nursery:
        seeds = [lc.nodes["n1"].app_address]
        for c in range(args.clients):
            rngs = [random.Random(f"{args.seed}/{c}/{i}") for i in range(args.concurrency)]
            await nursery.start(_client, seeds, f"bench-c{c + 1}", load, rngs)
        # phase 1: one node
        t = trio.current_time()
        load.tally = Tally(t0=t)
        await trio.sleep(args.single)
        one = load.tally
        one.t1 = trio.current_time()
        result["rps_one_node"] = round(one.ok / (one.t1 - one.t0), 1)
        result["one_node_failed"] = one.failed
        # grow to N nodes (not counted)
        load.tally = Tally()
        for _ in range(args.nodes - 1):
            await lc.start()
        await lc.wait_operational(120.0)
        # phase 2: N nodes, a kill and a start
        probe_scope = trio.CancelScope()

        async def run_probe() -> None:
            with probe_scope:
                async with open_client([n.app_address for n in lc.live()],
                                       client_id="bench-probe") as prober, \
                        open_direct("bench-direct") as direct:
                    await probe(prober, direct, args.keys, args.timeout, samples,
                                random.Random(f"{args.seed}/probe"))

        nursery.start_soon(run_probe)
        t0 = trio.current_time()
        wall0 = time.time()
        main = load.tally = Tally(t0=t0)
        killed = started = None
        kills: list[tuple[float, str]] = []
        if args.kill_one:
            load.fault_at = t0 + 0.3 * args.duration
            await trio.sleep_until(load.fault_at)
            victim = rng.choice([n.id for n in lc.live() if n.id != "n1"])
            lc.kill(victim)
            await lc.nodes[victim].proc.wait()  # its records all predate this instant
            kills.append((time.time(), victim))
            killed = victim
            await trio.sleep_until(t0 + 0.5 * args.duration)
            started = (await lc.start()).id
        await trio.sleep_until(t0 + args.duration)
        main.t1 = trio.current_time()
        wall1 = time.time()
        probe_scope.cancel()
        nursery.cancel_scope.cancel()
    window = (load.fault_at if args.kill_one else main.t1) - main.t0
    result.update({
        "requests": main.ok + main.failed,
        "ok": main.ok,
        "failed": main.failed,
        "failed_before_deadline": main.early,
        "failed_by_reason": dict(sorted(main.reasons.items())),
    })
    result.update(audit_traces([lc.trace_path(n) for n in lc.nodes], wall0, wall1, kills))
    result.update({
        "p50_us": pct_us(main.latencies, 0.5),
        "p99_us": pct_us(main.latencies, 0.99),
        "routed_probe_p50_us": pct_us(samples["routed"], 0.5),
        "routed_probe_p99_us": pct_us(samples["routed"], 0.99),
        "direct_p50_us": pct_us(samples["direct"], 0.5),
        "direct_p99_us": pct_us(samples["direct"], 0.99),
        "probe_samples": len(samples["routed"]),
        "direct_failed": len(samples["direct_failed"]),
        f"rps_{args.nodes}_nodes": round(main.ok_before_fault / window, 1) if window > 0
        else None,
        "killed": killed,
        "started": started,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    })
    rp, dp = result["routed_probe_p50_us"], result["direct_p50_us"]
    result["routing_overhead_p50_pct"] = round(100 * (rp / dp - 1), 1) if rp and dp else None
    return result


async def _client(seeds: list[str], name: str, load: Load, rngs: list[random.Random],
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """A routing client and its request loops (cancelled before the client closes)."""
    async with open_client(seeds, client_id=name) as client, trio.open_nursery() as n:
        for rng in rngs:
            n.start_soon(load.loop, client, rng)
        task_status.started(client)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=4, help="request loops per client")
    p.add_argument("--duration", type=float, default=20.0, help="phase 2 seconds")
    p.add_argument("--single", type=float, default=5.0, help="phase 1 (one node) seconds")
    p.add_argument("--kill-one", action="store_true",
                   help="SIGKILL a node at 30 %% of phase 2, start a new one at 50 %%")
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=2.0, help="request deadline, s")
    p.add_argument("--seed", type=int, default=1, help="which node is killed; keys")
    p.add_argument("--workdir", default=None, help="keep the nodes' logs and traces here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.nodes < 2 or args.clients < 1:
        p.error("--nodes >= 2 and --clients >= 1")
    res = trio.run(bench, args)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>28}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
