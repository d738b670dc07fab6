"""Process helpers shared by the benchmarks that run real nodes (attack, kill9, routing).

* :func:`spawn` starts ``python -m clusterfunk ...`` (or any argv) with its stdout and
  stderr appended to ``ROOT/NAME.out`` / ``ROOT/NAME.err``, unbuffered;
* :func:`stop_all` stops processes with SIGTERM, then SIGKILL after a bound;
* :func:`wait_until` polls a predicate (a benchmark watches other processes, so there
  is no event to await) until it holds or the timeout passes;
* :func:`rss_kb` reads a process's resident set size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

#: argv prefix of the clusterfunk command line, in this interpreter
PY = [sys.executable, "-m", "clusterfunk"]


def spawn(root: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv``; its output goes to ``root/name.out`` and ``root/name.err``."""
    out = open(root / f"{name}.out", "ab")  # noqa: SIM115 (the child owns the files)
    err = open(root / f"{name}.err", "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(argv, stdout=out, stderr=err,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        out.close()
        err.close()


def stop_all(procs: Iterable[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM every live process, wait up to ``grace`` s each, then SIGKILL."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def wait_until(pred: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    """Whether ``pred()`` became true within ``timeout`` seconds (checked every ``step``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if not found)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
