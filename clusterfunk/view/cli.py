"""``clusterfunk view TRACE [TRACE ...] -o run.html``: draw a run as one HTML page."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from clusterfunk.audit import MalformedTrace, Options, read
from clusterfunk.audit.gossip import PROFILES
from clusterfunk.view.model import build
from clusterfunk.view.render import render


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "view",
        help="draw a trace as one self-contained HTML page (space-time diagram, audit)",
        description="Write one HTML file (inline JS/CSS, no network fetches) showing a run: "
        "lanes per node with Raft roles, faults, gossip views, the shard map over time, "
        "messages (with --trace-net) and the audit's violations; a time slider and steps.",
    )
    p.add_argument("trace", nargs="+", metavar="TRACE", help="trace file(s), JSON Lines")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--title", help="page title (default: the trace file name)")
    p.add_argument(
        "--max-messages", type=int, default=120_000,
        help="message arrows kept, sampled evenly beyond (default 120000)",
    )
    p.add_argument(
        "--gossip-profile", choices=sorted(PROFILES), default="lan",
        help="for the audit's gossip false-positive grace (default lan)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    title = args.title or ", ".join(os.path.basename(p) for p in args.trace)
    try:
        data = build(
            read(args.trace), title, max_messages=args.max_messages,
            audit=Options(gossip_profile=args.gossip_profile),
        )
    except MalformedTrace as exc:
        print(f"clusterfunk view: malformed trace: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        print(f"clusterfunk view: cannot read trace: {exc}", file=sys.stderr)
        return 2
    page = render(data)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(page)
    size = len(page.encode("utf-8"))
    viol = len(data["violations"])
    print(
        f"wrote {args.output}: {size / 1e6:.1f} MB, {len(data['nodes'])} lanes, "
        f"{data['meta']['records']} records, {viol} violation(s) listed, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0
