"""``clusterfunk cluster-node``: run one cluster node as a process.

::

    clusterfunk cluster-node --id a --bind-host 127.0.0.1                 # bootstraps
    clusterfunk cluster-node --id b --bind-host 127.0.0.1 --gossip-port 7947 \\
        --raft-port 8301 --coord-port 8401 --join 127.0.0.1:7946

Prints one JSON line per (state, role) change on stdout (``{"t", "node", "state",
"role", "leader", "nodes"}``) until interrupted (Ctrl-C leaves gracefully).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from typing import Any

import trio


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cluster-node",
        help="run one cluster node (gossip + Raft + shard map)",
        description="Run one clusterfunk cluster node; prints state changes as JSON lines.",
    )
    p.add_argument("--id", required=True, help="this node's id")
    p.add_argument("--bind-host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--advertise-host", help="address others reach us at (default: bind host)")
    p.add_argument("--join", action="append", default=[], metavar="HOST:PORT",
                   help="gossip seed to join through (repeatable); none: bootstrap")
    p.add_argument("--data-dir", help="directory for the Raft SQLite database (default: memory)")
    p.add_argument("--shards", type=int, default=10_000, help="number of shards (10000)")
    p.add_argument("--voters", type=int, default=3, help="target Raft voters (3)")
    p.add_argument("--gossip-port", type=int, default=7946)
    p.add_argument("--raft-port", type=int, default=8300)
    p.add_argument("--coord-port", type=int, default=8400)
    p.add_argument("--endpoint", action="append", default=[], metavar="NAME=HOST:PORT",
                   help="publish a user endpoint (repeatable)")
    p.add_argument("--trace", help="write the JSON Lines trace here")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    endpoints = {}
    for item in args.endpoint:
        name, sep, addr = item.partition("=")
        if not sep or not name or not addr:
            print(f"clusterfunk cluster-node: error: --endpoint takes NAME=HOST:PORT, "
                  f"not {item!r}", file=sys.stderr)
            return 2
        endpoints[name] = addr
    interrupted = False
    try:
        trio.run(serve, args, endpoints)
    except* KeyboardInterrupt:  # a Ctrl-C before the signal handler is installed
        interrupted = True
    return 130 if interrupted else 0


async def serve(args: argparse.Namespace, endpoints: dict[str, str]) -> None:
    from clusterfunk.node import Cluster
    from clusterfunk.trace import Tracer

    with contextlib.ExitStack() as files:
        tracer = None
        if args.trace:
            out = files.enter_context(open(args.trace, "w", encoding="utf-8", newline="\n"))
            tracer = Tracer(time.time, out)
        async with Cluster(
            args.id, bind_host=args.bind_host, advertise_host=args.advertise_host,
            seeds=args.join, data_dir=args.data_dir, shards=args.shards, voters=args.voters,
            gossip_port=args.gossip_port, raft_port=args.raft_port,
            coord_port=args.coord_port, tracer=tracer,
        ) as cluster:
            for name, addr in endpoints.items():
                cluster.set_endpoint(name, addr)
            events = cluster.events()
            _print(cluster, cluster.state(), cluster.role())
            # SIGINT / SIGTERM end the loop below; leaving the ``async with`` then
            # leaves the cluster gracefully (a KeyboardInterrupt could land anywhere).
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:

                    async def stop_on_signal() -> None:
                        async for _ in signals:
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(stop_on_signal)
                    async for state, role in events:
                        _print(cluster, state, role)


def _print(cluster: Any, state: str, role: str) -> None:
    line = {"t": round(time.time(), 6), "node": cluster.node_id, "state": state, "role": role,
            "leader": cluster.leader(), "nodes": cluster.nodes()}
    print(json.dumps(line), flush=True)
