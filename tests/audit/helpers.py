"""Shared by the audit and view tests: simulation traces and trace editing."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
from typing import Any

from clusterfunk.cli import main as cli_main


def simulate(
    out: pathlib.Path, protocol: str, nodes: int, seed: int, duration: float = 60, *extra: str
) -> tuple[int, pathlib.Path, str]:
    """Run ``clusterfunk simulate ... --nemesis all --trace`` in this process.

    Returns the exit status (0: the in-run checkers found nothing, 1: they found
    violations), the trace path and the printed summary."""
    path = out / f"{protocol}-{nodes}-{seed}.jsonl"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main([
            "simulate", "--protocol", protocol, "--nodes", str(nodes), "--duration",
            str(duration), "--seed", str(seed), "--nemesis", "all", "--trace", str(path),
            "--progress", "never", *extra,
        ])
    return rc, path, buf.getvalue()


def audit_cli(*args: str) -> tuple[int, str, str]:
    """Run ``clusterfunk audit ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["audit", *args])
    return rc, out.getvalue(), err.getvalue()


def load(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dump(path: pathlib.Path, records: list[dict[str, Any]]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path
