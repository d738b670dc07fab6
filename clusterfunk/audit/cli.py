"""``clusterfunk audit TRACE [TRACE ...]``: check a trace offline (docs/audit.md).

Exit status: 0 clean, 1 violations (listed), 2 a malformed trace or an unreadable
file (one line on stderr naming the file and line).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clusterfunk.audit.gossip import PROFILES
from clusterfunk.audit.reader import MalformedTrace, read
from clusterfunk.audit.runner import Options, audit, format_report


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="check a trace offline: Raft safety, linearizability, shard maps, gossip",
        description="Check JSON Lines traces (docs/trace.md) from the schema alone. Several "
        "files (one per process) are merged by time. Exit 0 clean, 1 violations, 2 malformed.",
    )
    add_arguments(p)
    p.set_defaults(func=main)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", nargs="+", metavar="TRACE", help="trace file(s), JSON Lines")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--gossip-profile", choices=sorted(PROFILES), default="lan",
        help="gossip timing the run used, for the false-positive grace (default lan)",
    )
    p.add_argument(
        "--grace", type=float, metavar="SECONDS",
        help="gossip false-positive grace after a fault (default: the profile's detection bound)",
    )
    p.add_argument(
        "--limit", type=int, default=100, help="violations listed per check (all are counted)",
    )


def main(args: argparse.Namespace) -> int:
    opts = Options(limit=args.limit, grace=args.grace, gossip_profile=args.gossip_profile)
    try:
        report = audit(read(args.trace), opts, label=", ".join(args.trace))
    except MalformedTrace as exc:
        print(f"clusterfunk audit: malformed trace: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        print(f"clusterfunk audit: cannot read trace: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_json(), separators=(",", ":")))
    else:
        print(format_report(report, args.trace))
    return 1 if report.violations else 0


def run(argv: list[str]) -> int:
    """Run ``clusterfunk audit`` with ``argv`` (for ``python -m clusterfunk.audit``)."""
    p = argparse.ArgumentParser(prog="clusterfunk audit")
    add_arguments(p)
    return main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
