"""Real processes: five `clusterfunk gossip-node` processes on loopback; one is
SIGKILLed and every survivor declares it dead."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from queue import Empty, Queue

import pytest

NAMES = ["p1", "p2", "p3", "p4", "p5"]


KEY = base64.b64encode(bytes(range(32))).decode()


class Proc:
    def __init__(self, name: str, seeds: str = "", extra: tuple[str, ...] = ()) -> None:
        cmd = [sys.executable, "-m", "clusterfunk", "gossip-node", "--name", name,
               "--bind", "127.0.0.1:0", "--profile", "local", "--key", KEY, *extra]
        if seeds:
            cmd += ["--seeds", seeds]
        self.name = name
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: Queue[dict] = Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            if line.strip():
                self.lines.put(json.loads(line))

    def wait(self, pred, timeout: float) -> dict:
        """The first record (new or already seen) satisfying ``pred``."""
        for rec in self.seen:
            if pred(rec):
                return rec
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: timed out; last lines {self.seen[-5:]}")
            try:
                rec = self.lines.get(timeout=min(left, 0.5))
            except Empty:
                if self.p.poll() is not None:
                    raise AssertionError(f"{self.name} exited: {self.p.stderr.read()}") from None
                continue
            self.seen.append(rec)
            if pred(rec):
                return rec

    def view(self) -> dict[str, str]:
        v: dict[str, str] = {}
        for rec in self.seen:
            if rec.get("ev") == "member":
                v[rec["member"]] = rec["status"]
        return v


def test_five_processes_sigkill_one(tmp_path) -> None:
    """Five keyed (AES-GCM sealed) processes; p1 also writes the audit trace."""
    trace = tmp_path / "p1.jsonl"
    procs: list[Proc] = []
    try:
        first = Proc("p1", extra=("--trace", str(trace)))
        procs.append(first)
        addr = first.wait(lambda r: r["ev"] == "listening", 20)["addr"]
        for name in NAMES[1:]:
            procs.append(Proc(name, seeds=addr))
        for p in procs:
            p.wait(lambda r, p=p: len([s for s in p.view().values() if s == "alive"]) == 5
                   if r["ev"] == "member" else False, 30)
        victim = procs[2]
        victim.p.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.p.wait(10)
        for p in procs:
            if p is victim:
                continue
            rec = p.wait(lambda r: r["ev"] == "member" and r["member"] == "p3"
                         and r["type"] == "failed", 40)
            assert rec["status"] == "dead"
        elapsed = time.monotonic() - killed_at
        assert elapsed < 40
        # Nobody else was declared dead, and a graceful stop is a leave, not a failure.
        for p in procs:
            if p is not victim:
                assert {m: s for m, s in p.view().items() if m != "p3"} == {
                    n: "alive" for n in NAMES if n != "p3"}
        procs[1].p.send_signal(signal.SIGTERM)
        assert procs[1].p.wait(15) == 0
        procs[0].wait(lambda r: r["ev"] == "member" and r["member"] == "p2"
                      and r["type"] == "left", 15)
        procs[0].p.send_signal(signal.SIGINT)
        assert procs[0].p.wait(15) == 0
        recs = [json.loads(line) for line in trace.read_text().splitlines()]
        assert all(list(r)[:3] == ["t", "node", "ev"] and r["node"] == "p1" for r in recs)
        verdicts = {(r["member"], r["status"]) for r in recs if r["ev"] == "gossip.member"}
        assert {("p3", "dead"), ("p2", "left"), ("p1", "left")} <= verdicts
        assert not any(r["ev"] == "net.malformed" for r in recs)
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
            p.p.wait(10)
            for s in (p.p.stdout, p.p.stderr):
                if s is not None:
                    s.close()


@pytest.mark.parametrize("argv", [["--key", "not-base64!"], ["--tags", "novalue"]])
def test_bad_options_exit_2(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clusterfunk", "gossip-node", "--name", "x",
         "--bind", "127.0.0.1:0", *argv],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2 and "error" in proc.stderr
