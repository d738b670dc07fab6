"""The import contract (docs/architecture.md): it fails CI when a seam is crossed.

* A protocol core is a pure state machine: it imports no trio, sockets, clocks,
  threads or storage engines, uses no global ``random`` (only ``random.Random``
  instances handed to it), and nothing from the simulator or the real runtime.
* No protocol package (raft, gossip, sharding, cluster) imports the simulator,
  not even lazily inside a function.
Imports are read from the source (``ast``), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "clusterfunk"

#: The pure state machines and their pure helpers.
CORES = [
    "raft/core.py", "raft/log.py", "raft/progress.py", "raft/quorum.py", "raft/messages.py",
    "raft/config.py", "raft/events.py", "raft/roles.py", "raft/requests.py",
    "raft/statemachine.py", "raft/kv.py", "raft/storage.py",
    "gossip/core.py", "gossip/awareness.py", "gossip/broadcast.py", "gossip/suspicion.py",
    "gossip/probe.py", "gossip/state.py", "gossip/lamport.py", "gossip/vivaldi.py",
    "gossip/serf.py", "gossip/messages.py", "gossip/events.py", "gossip/config.py",
    "cluster/coordinator.py", "cluster/statemachine.py", "cluster/messages.py",
    "sharding/shardmap.py", "sharding/codec.py", "sharding/keys.py", "sharding/weights.py",
    "sharding/stats.py", "wire.py",
    "routing/api.py", "routing/messages.py", "routing/server.py", "routing/client.py",
    "routing/auth.py",
]
FORBIDDEN_IN_CORES = {
    "trio", "socket", "time", "asyncio", "threading", "select", "selectors", "sqlite3",
    "clusterfunk.sim", "clusterfunk.runtime.net", "clusterfunk.runtime.trio_host",
    "clusterfunk.node",
}
PROTOCOL_PACKAGES = ["raft", "gossip", "sharding", "cluster"]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _hits(name: str, banned: set[str]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("rel", CORES)
def test_cores_import_no_io_clock_or_simulator(rel: str) -> None:
    path = ROOT / rel
    bad = [f"{rel}:{line}: imports {name}" for line, name in _imports(path)
           if _hits(name, FORBIDDEN_IN_CORES)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("rel", CORES)
def test_cores_use_no_global_random(rel: str) -> None:
    tree = ast.parse((ROOT / rel).read_text())
    bad = [
        f"{rel}:{node.lineno}: random.{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "random"
        and node.func.attr != "Random"
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", PROTOCOL_PACKAGES)
def test_protocol_packages_never_import_the_simulator(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in _imports(path)
        if _hits(name, {"clusterfunk.sim"})
    ]
    assert not bad, "\n".join(bad)


def test_every_listed_core_exists_and_the_checker_can_fail(tmp_path: Path) -> None:
    for rel in CORES:
        assert (ROOT / rel).is_file(), rel
    sneaky = tmp_path / "core.py"
    sneaky.write_text("def f():\n    import trio\n    from clusterfunk.sim import simulation\n")
    names = [n for _, n in _imports(sneaky)]
    assert _hits(names[0], FORBIDDEN_IN_CORES) and _hits(names[1], {"clusterfunk.sim"})
