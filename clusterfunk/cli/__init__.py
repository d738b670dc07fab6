"""The ``clusterfunk`` command line.

Every entry point lives in this package (or names its module in :data:`PLUGINS`),
each module exposing ``add_parser(subparsers)``. A module that fails to import
loses only its own subcommands, with a warning on stderr naming it (never
silently).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from clusterfunk import __version__

#: Modules contributing subcommands (beside ``simulate``, defined here).
PLUGINS = (
    "clusterfunk.cli.shards",
    "clusterfunk.cli.raft_node",
    "clusterfunk.cli.gossip_node",
    "clusterfunk.cli.ping",
    "clusterfunk.cli.cluster_node",
    "clusterfunk.cli.demo",
    "clusterfunk.cli.ctl",
    "clusterfunk.security.certs",
    "clusterfunk.audit.cli",
    "clusterfunk.view.cli",
    "clusterfunk.sweep.cli",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``command="simulate"`` only that subcommand (a simulation
    needs none of the plugins, whose imports would cost every run a noticeable part
    of a short simulation's time)."""
    parser = argparse.ArgumentParser(
        prog="clusterfunk",
        description="Raft, SWIM gossip and weighted sharding, with a deterministic simulator.",
    )
    parser.add_argument("--version", action="version", version=f"clusterfunk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from clusterfunk.sim import runner

    sim = sub.add_parser(
        "simulate",
        help="run a seeded, deterministic cluster simulation in virtual time",
        description="Run a seeded, deterministic simulation. Same seed and options -> "
        "byte-identical trace.",
    )
    runner.add_arguments(sim)
    sim.set_defaults(func=runner.main)
    for name in PLUGINS if command != "simulate" else ():
        try:
            mod = importlib.import_module(name)
        except Exception as exc:  # a broken plugin must not take the other commands down,
            # and must not vanish silently either: every plugin here is in-tree
            print(f"clusterfunk: warning: {name} failed to load: {exc!r}", file=sys.stderr)
            continue
        add = getattr(mod, "add_parser", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
