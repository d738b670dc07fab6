"""The audit and the viewer read traces by the documented schema alone: importing
them loads nothing of the simulator, Raft, gossip or cluster code (only the pure
linearizability search) and no runtime dependency such as trio."""

from __future__ import annotations

import json
import subprocess
import sys

ALLOWED = {
    "clusterfunk", "clusterfunk.sim", "clusterfunk.sim.checkers",
    "clusterfunk.sim.checkers.linearizability",
}


def test_imports_nothing_of_the_protocols_or_the_simulator() -> None:
    code = (
        "import json, sys, clusterfunk.audit.cli, clusterfunk.view.cli; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    mods = set(json.loads(out))
    ours = {m for m in mods if m.startswith("clusterfunk")}
    extra = {m for m in ours - ALLOWED
             if not m.startswith(("clusterfunk.audit", "clusterfunk.view"))}
    assert extra == set(), extra
    assert not mods & {"trio", "msgpack", "cryptography"}
