"""``clusterfunk ping-node``: one real OS process running the ping demo core.

Runs :class:`clusterfunk.demo.ping.PingCore` over real UDP + TCP through
:func:`clusterfunk.runtime.trio_host.open_driver` for ``--duration`` seconds,
then prints one JSON summary line::

    {"id": "n1", "address": "127.0.0.1:7001", "pings": 40, "pongs": 38,
     "hellos_back": 7, "rtt_median": 0.00021, ...}

Also runnable as ``python -m clusterfunk.cli.ping ping-node ...``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import trio

from clusterfunk.demo.ping import PingCore
from clusterfunk.runtime.net import canonical_address
from clusterfunk.runtime.trio_host import open_driver
from clusterfunk.trace import Tracer


def add_parser(subparsers: Any) -> None:
    """Register the ``ping-node`` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser(
        "ping-node",
        help="run one ping demo node over real UDP/TCP",
        description="Run the ping demo core over real UDP and TCP, print a JSON summary.",
    )
    p.add_argument("--id", required=True, help="node id (used in the trace), e.g. n1")
    p.add_argument("--bind", required=True, help="host:port to bind (UDP and TCP)")
    p.add_argument("--advertise", default=None, help="host:port peers use (default: --bind)")
    p.add_argument("--peers", default="", help="comma-separated host:port of the other nodes")
    p.add_argument("--duration", type=float, default=5.0, help="seconds to run")
    p.add_argument("--interval", type=float, default=0.1, help="mean seconds between pings")
    p.add_argument("--stream-every", type=int, default=5, help="send a stream Hello every Nth ping")
    p.add_argument("--frame-bytes", type=int, default=256, help="size of the stream Hello body")
    p.add_argument("--seed", type=int, default=None, help="seed for the core's RNG")
    p.add_argument("--trace", default=None, help="write a JSON Lines trace to this path")
    p.set_defaults(func=handler)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    peers = [canonical_address(p.strip()) for p in args.peers.split(",") if p.strip()]
    rng = random.Random(args.seed)
    out = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
    try:
        # Production traces are stamped with Unix time (docs/trace.md); the core
        # itself only ever sees the driver's monotonic clock.
        tracer = Tracer(time.time, out) if out is not None else None
        me = canonical_address(args.advertise or args.bind)
        core = PingCore(
            me,
            peers,
            rng,
            interval=args.interval,
            stream_every=args.stream_every,
            frame_bytes=args.frame_bytes,
        )
        async with open_driver(
            args.id, core, args.bind, advertise=args.advertise, tracer=tracer
        ) as driver:
            core.me = driver.transport.local_address
            core.peers = [p for p in peers if p != core.me]
            await trio.sleep(args.duration)
            tstats: Any = driver.transport.stats  # type: ignore[attr-defined]  # NetTransport
            dstats = driver.stats
    finally:
        if out is not None:
            out.close()
    rtts = sorted(core.rtts)
    return {
        "id": args.id,
        "address": driver.transport.local_address,
        "pings": core.seq,
        "pongs": core.pongs,
        "unexpected_pongs": core.unexpected_pongs,
        "hellos_back": core.hellos_back,
        "rtt_median": round(statistics.median(rtts), 6) if rtts else None,
        "rtt_max": round(rtts[-1], 6) if rtts else None,
        "malformed": dstats.malformed,
        "datagrams_dropped": tstats.datagrams_dropped,
        "frames_dropped": tstats.frames_dropped_queue_full,
        "connects": tstats.connects,
        "connect_failures": tstats.connect_failures,
    }


def handler(args: argparse.Namespace) -> int:
    try:
        summary = trio.run(run, args)
    except OSError as exc:
        print(f"ping-node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterfunk.cli.ping")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
