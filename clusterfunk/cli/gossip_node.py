"""``clusterfunk gossip-node``: one gossip member as an OS process.

::

    clusterfunk gossip-node --name n1 --bind 127.0.0.1:0 --seeds 127.0.0.1:7946 \\
        [--profile lan|wan|local] [--tags role=web,dc=east] [--key BASE64 ...] \\
        [--no-encrypt] [--trace PATH] [--duration SECONDS]

Standard output is JSON Lines, flushed line by line:

* first ``{"ev": "listening", "node": NAME, "addr": "host:port"}`` once bound;
* then one line per public event: ``{"t": unix time, "node": NAME, "ev": "member",
  "type": "joined|updated|suspect|failed|left|reaped", "member": ..., "status": ...,
  "incarnation": ...}``, ``{"ev": "user", "name": ..., "payload": hex}`` and
  ``{"ev": "query", "name": ..., "from": ...}``;
* ``{"ev": "stopped", ...}`` with the driver's counters at the end.

``--trace PATH`` writes the audit trace (``gossip.member`` and friends, Unix
time). SIGINT or SIGTERM: leave gracefully, then exit 0. ``--duration``: run that
long, then leave. A node that cannot join (no seed answers) exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from typing import IO, Any

import trio

from clusterfunk.gossip.api import GossipError, GossipNode
from clusterfunk.gossip.config import profile
from clusterfunk.gossip.events import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberSuspect,
    MemberUpdated,
    Query,
    UserEvent,
)
from clusterfunk.gossip.keyring import Keyring, KeyringError, decode_key
from clusterfunk.trace import Tracer

_KINDS: dict[type, str] = {
    MemberJoined: "joined",
    MemberUpdated: "updated",
    MemberSuspect: "suspect",
    MemberFailed: "failed",
    MemberLeft: "left",
    MemberReaped: "reaped",
}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gossip-node",
        help="run one SWIM/Lifeguard gossip member (JSON Lines on stdout)",
        description="Run one gossip member on UDP + TCP; prints member changes as JSON Lines.",
    )
    p.add_argument("--name", required=True, help="member name (unique in the cluster)")
    p.add_argument("--bind", default="127.0.0.1:7946",
                   help="host:port for UDP and TCP (port 0: any)")
    p.add_argument("--advertise", help="host:port others should use (default: the bound one)")
    p.add_argument("--seeds", default="", help="comma-separated host:port of members to join")
    p.add_argument("--profile", default="lan", choices=("lan", "wan", "local"))
    p.add_argument("--tags", default="", help="comma-separated key=value tags")
    p.add_argument("--key", action="append", default=[],
                   help="base64 keyring key (repeat; the first is primary)")
    p.add_argument("--no-encrypt", action="store_true",
                   help="with --key: authenticate packets only, do not encrypt")
    p.add_argument("--trace", metavar="PATH", help="write the JSON Lines audit trace here")
    p.add_argument("--duration", type=float, help="leave and exit after this many seconds")
    p.add_argument("--join-timeout", type=float, default=10.0)
    p.set_defaults(func=handler)


def parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"a tag is key=value, not {item!r}")
        tags[k] = v
    return tags


def event_record(node: str, ev: Any) -> dict[str, Any] | None:
    """The stdout line for a public event (None for events not printed)."""
    kind = _KINDS.get(type(ev))
    t = round(time.time(), 6)
    if kind is not None:
        m = ev.member
        return {"t": t, "node": node, "ev": "member", "type": kind, "member": m.name,
                "status": m.status, "incarnation": m.incarnation, "addr": m.addr}
    if isinstance(ev, UserEvent):
        return {"t": t, "node": node, "ev": "user", "name": ev.name, "payload": ev.payload.hex()}
    if isinstance(ev, Query):
        return {"t": t, "node": node, "ev": "query", "name": ev.name, "from": ev.source}
    return None


def _line(out: IO[str], rec: dict[str, Any]) -> None:
    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    out.flush()


async def run(args: argparse.Namespace, out: IO[str]) -> int:
    config = profile(args.profile)
    keyring = Keyring([decode_key(k) for k in args.key]) if args.key else None
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    with contextlib.ExitStack() as stack:
        tracer = None
        if args.trace:
            f = stack.enter_context(open(args.trace, "w", encoding="utf-8", newline="\n"))
            tracer = Tracer(time.time, f)
        node = GossipNode(
            args.name, bind=args.bind, advertise=args.advertise, config=config,
            tags=parse_tags(args.tags), keyring=keyring, encrypt=not args.no_encrypt,
            tracer=tracer, join_timeout=args.join_timeout,
        )
        async with node:
            stream = node.events()
            _line(out, {"t": round(time.time(), 6), "node": args.name, "ev": "listening",
                        "addr": node.address})
            for m in node.members():  # what is known already (our own entry at least)
                _line(out, {"t": round(time.time(), 6), "node": args.name, "ev": "member",
                            "type": "known", "member": m.name, "status": m.status,
                            "incarnation": m.incarnation, "addr": m.addr})
            if seeds:
                try:
                    await node.join(seeds, timeout=args.join_timeout)
                except GossipError as exc:
                    _line(out, {"node": args.name, "ev": "error", "error": str(exc)})
                    return 1
            async with trio.open_nursery() as nursery:

                async def pump() -> None:
                    async for ev in stream:
                        rec = event_record(args.name, ev)
                        if rec is not None:
                            _line(out, rec)

                nursery.start_soon(pump)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    with trio.move_on_after(args.duration if args.duration else float("inf")):
                        async for _ in signals:
                            break
                await node.leave()
                nursery.cancel_scope.cancel()
            stats = node.stats
            _line(out, {"t": round(time.time(), 6), "node": args.name, "ev": "stopped",
                        "datagrams_out": stats.datagrams_out, "frames_out": stats.frames_out,
                        "bytes_out": stats.bytes_out, "malformed": stats.malformed})
    return 0


def handler(args: argparse.Namespace) -> int:
    try:
        return trio.run(run, args, sys.stdout)
    except (ValueError, KeyringError) as exc:
        print(f"clusterfunk gossip-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m clusterfunk.cli.gossip_node")
    add_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
