"""``clusterfunk simulate`` starts without importing the other subcommands (their
imports, trio among them, cost a short simulation a large part of its time)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from clusterfunk.cli import build_parser, main
main(["simulate", "--protocol", "ping", "--nodes", "2", "--duration", "0.5"])
loaded = sorted(m for m in ("trio", "clusterfunk.sweep.cli", "clusterfunk.audit.cli",
                            "clusterfunk.view.cli", "clusterfunk.cli.ctl") if m in sys.modules)
print("LOADED", loaded)
full = build_parser()
print("COMMANDS", sorted(full._subparsers._group_actions[0].choices))
"""


def test_simulate_imports_no_plugin_and_the_full_parser_still_has_them() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines()
                 if line.startswith(("LOADED", "COMMANDS")))
    assert lines["LOADED"] == "[]"
    for command in ("simulate", "sweep", "audit", "view", "cluster-node"):
        assert f"'{command}'" in lines["COMMANDS"]
