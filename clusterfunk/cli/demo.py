"""``clusterfunk demo``: the demo sharded service as real processes on loopback.

::

    clusterfunk demo --nodes 5 --clients 2            # until Ctrl-C
    clusterfunk demo --nodes 3 --clients 1 --duration 10 --json

Starts ``--nodes`` ``cluster-node --app demo`` processes (the sharded counter service,
:mod:`clusterfunk.demo.kv`; in-memory Raft logs, free loopback ports; see
:mod:`clusterfunk.demo.launch`), waits until they serve one shard map, then runs
``--clients`` routing clients (:func:`clusterfunk.routing.trio_client.open_client`),
each with ``--concurrency`` request loops sending ``incr`` (or, one time in four,
``get``) on random keys. A table, refreshed every ``--refresh`` seconds, shows per
node its state and role, the shards it owns in the clients' map, and the requests
it answered in the last interval: rate, p50 and p99 latency (as the clients saw
them), and failed requests. Ctrl-C (or SIGTERM, or ``--duration``) stops the
clients and the nodes (a graceful leave). ``--json`` prints one summary object at
the end instead of the table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import time
from typing import Any

import attrs
import trio

from clusterfunk.demo import kv


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="run the demo sharded service: real node processes and clients",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("--nodes", type=int, default=5, help="node processes (5)")
    p.add_argument("--clients", type=int, default=2, help="routing clients (2)")
    p.add_argument("--concurrency", type=int, default=4,
                   help="request loops per client, one request in flight each (4)")
    p.add_argument("--shards", type=int, default=1000, help="shards (1000)")
    p.add_argument("--keys", type=int, default=10_000, help="distinct keys (10000)")
    p.add_argument("--timeout", type=float, default=2.0, help="request deadline, s (2)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: at Ctrl-C)")
    p.add_argument("--refresh", type=float, default=1.0, help="table refresh period, s (1)")
    p.add_argument("--json", action="store_true",
                   help="no table: print a JSON summary at the end")
    p.add_argument("--workdir", default=None,
                   help="keep the nodes' stderr logs here (default: a temporary directory)")
    p.set_defaults(func=handler)


def pct(values: list[float], p: float) -> float | None:
    """The ``p`` quantile (nearest rank) of ``values`` (unsorted), or None if empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


@attrs.define
class NodeStats:
    ok: int = 0
    latencies: list[float] = attrs.Factory(list)  # seconds, this interval


@attrs.define
class Stats:
    """What the clients saw: per answering node, per refresh interval and in total."""

    window: dict[str, NodeStats] = attrs.Factory(dict)
    total: dict[str, int] = attrs.Factory(dict)
    all_latencies: list[float] = attrs.Factory(list)
    failed: int = 0
    failed_window: int = 0
    reasons: dict[str, int] = attrs.Factory(dict)
    since: float = attrs.field(factory=time.monotonic)

    def ok(self, node: str, latency: float) -> None:
        w = self.window.setdefault(node, NodeStats())
        w.ok += 1
        w.latencies.append(latency)
        self.total[node] = self.total.get(node, 0) + 1
        self.all_latencies.append(latency)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failed_window += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def roll(self) -> tuple[float, dict[str, NodeStats], int]:
        """The interval's length, per-node stats and failures; start a new interval."""
        now = time.monotonic()
        out = (now - self.since, self.window, self.failed_window)
        self.window, self.failed_window, self.since = {}, 0, now
        return out


async def client_loop(client: Any, stats: Stats, rng: random.Random, keys: int,
                      timeout: float) -> None:
    """One request in flight at a time, forever (cancelled by the caller)."""
    while True:
        key = rng.randrange(keys)
        payload = kv.get() if rng.random() < 0.25 else kv.incr()
        ev = await client.finish(key, payload, timeout)
        if ev.ok:
            stats.ok(ev.node, ev.latency)
        else:
            stats.fail(ev.outcome)


def render(lc: Any, owned: dict[str, int], interval: float, window: dict[str, NodeStats],
           failed: int, stats: Stats) -> Any:
    from rich.table import Table

    t = Table(title=f"clusterfunk demo: {len(lc.live())} nodes, "
                    f"{sum(stats.total.values())} ok, {stats.failed} failed")
    for col in ("node", "state", "role", "shards", "req/s", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col in ("node", "state", "role") else "right")
    ids = sorted(set(lc.nodes) | set(window), key=lambda n: (len(n), n))
    for node_id in ids:
        node = lc.nodes.get(node_id)
        w = window.get(node_id, NodeStats())
        p50, p99 = pct(w.latencies, 0.5), pct(w.latencies, 0.99)
        state = "exited" if node is not None and node.exited else (node.state if node else "?")
        t.add_row(node_id, state, node.role if node else "", str(owned.get(node_id, 0)),
                  f"{w.ok / interval:.0f}" if interval > 0 else "-",
                  f"{p50 * 1e3:.2f}" if p50 is not None else "-",
                  f"{p99 * 1e3:.2f}" if p99 is not None else "-")
    all_lat = [x for w in window.values() for x in w.latencies]
    total_ok = sum(w.ok for w in window.values())
    p50, p99 = pct(all_lat, 0.5), pct(all_lat, 0.99)
    t.add_row("all", "", "", "", f"{total_ok / interval:.0f}" if interval > 0 else "-",
              f"{p50 * 1e3:.2f}" if p50 is not None else "-",
              f"{p99 * 1e3:.2f}" if p99 is not None else "-", end_section=True)
    t.caption = f"failed in the last {interval:.1f} s: {failed}; Ctrl-C stops"
    return t


async def run_demo(args: argparse.Namespace, out: Any = sys.stdout) -> dict[str, Any]:
    from clusterfunk.demo.launch import open_local_cluster

    if args.nodes < 1 or args.clients < 1 or args.concurrency < 1:
        raise ValueError("--nodes, --clients and --concurrency must be >= 1")
    stats = Stats()
    t0 = time.monotonic()
    async with open_local_cluster(args.nodes, shards=args.shards,
                                  workdir=args.workdir) as lc:
        settle = time.monotonic() - t0
        seeds = [n.app_address for n in lc.live()]
        clients: list[Any] = []
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _sig in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                if args.duration is not None:
                    nursery.cancel_scope.deadline = trio.current_time() + args.duration
                for c in range(args.clients):
                    client = await nursery.start(_run_client, seeds, f"demo-c{c + 1}", stats,
                                                 args)
                    clients.append(client)
                stats.roll()
                if args.json:
                    await trio.sleep_forever()
                await _show(lc, clients, stats, args, out)
        ran = time.monotonic() - t0 - settle
    return {
        "nodes": args.nodes, "clients": args.clients, "concurrency": args.concurrency,
        "settle_s": round(settle, 3), "seconds": round(ran, 3),
        "ok": sum(stats.total.values()), "failed": stats.failed,
        "failed_by_reason": dict(sorted(stats.reasons.items())),
        "ok_by_node": dict(sorted(stats.total.items(), key=lambda kv: (len(kv[0]), kv[0]))),
        "p50_us": _us(pct(stats.all_latencies, 0.5)),
        "p99_us": _us(pct(stats.all_latencies, 0.99)),
    }


def _us(x: float | None) -> float | None:
    return None if x is None else round(x * 1e6, 1)


async def _run_client(seeds: list[str], name: str, stats: Stats, args: argparse.Namespace,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    from clusterfunk.routing.trio_client import open_client

    async with open_client(seeds, client_id=name) as client, trio.open_nursery() as n:
        for i in range(args.concurrency):
            n.start_soon(client_loop, client, stats, random.Random(f"{name}/{i}"), args.keys,
                         args.timeout)
        task_status.started(client)


async def _show(lc: Any, clients: list[Any], stats: Stats, args: argparse.Namespace,
                out: Any) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            await trio.sleep(args.refresh)
            owned: dict[str, int] = {}
            m = clients[0].core.map if clients else None
            if m is not None:
                owned = dict(m.counts())
            interval, window, failed = stats.roll()
            live.update(render(lc, owned, interval, window, failed, stats), refresh=True)


def handler(args: argparse.Namespace) -> int:
    try:
        summary = trio.run(run_demo, args)
    except (ValueError, TimeoutError) as exc:
        print(f"clusterfunk demo: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\n{summary['ok']} requests ok, {summary['failed']} failed; "
              f"p50 {summary['p50_us']} us, p99 {summary['p99_us']} us")
    return 0
