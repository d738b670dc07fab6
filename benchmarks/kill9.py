"""SIGKILL loops with real processes and SQLite stores (issue 11).

Raft KV (``--part raft``): 3 (or 5) ``raft-node --store sqlite`` processes under
client load (several threads, each a :class:`clusterfunk.raft.client.SyncClient`,
writing unique keys, writing unique values to a few shared keys, and reading them
with ReadIndex). A killer SIGKILLs a random node (every third kill: the leader, as
the clients' leader hints name it), restarts it after a short delay, waits until it
is listening again, and goes on. Every operation's call and return is recorded
(outcome ``ok``; ``fail`` when the node said ``not_leader`` or refused it; ``unknown``
on a timeout or a lost connection). At the end: every acknowledged unique write is
read back through the leader, the history is checked with
:mod:`clusterfunk.sim.checkers.linearizability`, the nodes' traces with the Raft
safety checker, and every node is up.

Writes are sent once (``SyncClient.pipeline`` of one command to the leader the
client believes in): the client never re-sends a write on its own, so an ``unknown``
write is applied at most once and the history means what it says.

Cluster (``--part cluster``): 3 ``cluster-node --data-dir`` processes; SIGKILL a
random node (every third kill: the Raft leader), restart it after a short delay
with the same data directory and ports, wait until all three report ``operational``
with three map nodes, repeat. At the end all three agree on one committed map
(``/v1/status`` map index and nodes, ``/v1/nodes``).

    python benchmarks/kill9.py --kills 50 --cluster-kills 20 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from clusterfunk.raft import kv
from clusterfunk.raft.client import NOT_LEADER, ClientError, SyncClient
from clusterfunk.runtime.net import free_port
from clusterfunk.sim.checkers.linearizability import FAIL, OK, UNKNOWN, Op, check_history
from clusterfunk.sim.checkers.raft import SafetyChecker

try:
    from benchmarks.procs import PY, spawn, stop_all, wait_until
except ModuleNotFoundError:  # run as a script: benchmarks/ is sys.path[0]
    from procs import PY, spawn, stop_all, wait_until  # type: ignore[no-redef]



# -- Raft KV -----------------------------------------------------------------------------


class RaftProcs:
    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.raft = {k: f"127.0.0.1:{free_port()}" for k in self.ids}
        self.client = {k: f"127.0.0.1:{free_port()}" for k in self.ids}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cuts: dict[str, list[int]] = {}  # trace size at each SIGKILL
        self.starts = dict.fromkeys(self.ids, 0)

    def trace(self, sid: str) -> Path:
        return self.root / f"{sid}.jsonl"

    def start(self, sid: str) -> None:
        peers = ",".join(f"{k}={v}" for k, v in self.raft.items())
        out = self.root / f"{sid}.out"
        size = out.stat().st_size if out.exists() else 0
        self.procs[sid] = spawn(self.root, sid, [
            *PY, "raft-node", "--insecure", "--id", sid, "--bind", self.raft[sid],
            "--peers", peers, "--data-dir", str(self.root / sid), "--store", "sqlite",
            "--client-bind", self.client[sid], "--election-timeout", "0.5",
            "--trace", str(self.trace(sid))])
        self.starts[sid] += 1

        def ready() -> bool:
            with contextlib.suppress(OSError):
                if b'"ready": true' in out.read_bytes()[size:]:
                    return True
            if self.procs[sid].poll() is not None:
                raise RuntimeError(f"{sid} exited with {self.procs[sid].returncode}: "
                                   f"{(self.root / f'{sid}.err').read_text()[-2000:]}")
            return False

        if not wait_until(ready, 30):
            raise RuntimeError(f"{sid} did not start in 30 s")

    def kill(self, sid: str) -> None:
        p = self.procs.pop(sid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.cuts.setdefault(sid, []).append(self.trace(sid).stat().st_size)

    def stop(self) -> None:
        stop_all(self.procs.values())

    def audit(self) -> SafetyChecker:
        """Every trace through the Raft safety checker; a SIGKILL is a ``sim.crash``."""
        checker = SafetyChecker(sorted(self.ids))
        for sid in sorted(self.ids):
            data = self.trace(sid).read_bytes()
            pos = 0
            cuts = self.cuts.get(sid, [])
            for cut in [*cuts, len(data)]:
                for line in data[pos:cut].splitlines():
                    with contextlib.suppress(ValueError):
                        if line.strip():
                            checker(json.loads(line))
                if cut != len(data):
                    checker({"t": 0, "node": "sim", "ev": "sim.crash", "target": sid})
                pos = cut
        return checker


class Load:
    """Client threads; each records its operations as :class:`Op` s."""

    def __init__(self, nodes: dict[str, str], threads: int, seed: int) -> None:
        self.nodes = nodes
        self.stop = threading.Event()
        self.ops: list[Op] = []
        self.acked: dict[str, str] = {}  # unique key -> value, acknowledged
        self.leader_hint: str | None = None
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._run, args=(f"c{i}", seed * 100 + i),
                                         daemon=True) for i in range(threads)]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, name: str, seed: int) -> None:
        rng = random.Random(seed)
        c = SyncClient(self.nodes, timeout=2.0)
        c.leader = rng.choice(sorted(self.nodes))
        seq = 0
        local: list[Op] = []
        try:
            while not self.stop.is_set():
                seq += 1
                r = rng.random()
                if r < 0.4:
                    key, value = f"u-{name}-{seq}", f"{name}-{seq}"
                    self._write(c, local, name, key, value)
                elif r < 0.7:
                    self._write(c, local, name, self._shared(rng), f"{name}-{seq}")
                else:
                    self._read(c, local, name, self._shared(rng))
        finally:
            c.close()
            with self.lock:
                self.ops.extend(local)

    def _shared(self, rng: random.Random) -> str:
        """One of four shared keys of the current 10-second epoch: contention, while
        each key's history (and the checker's search) stays small."""
        return f"s{int(self.now() // 10)}-{rng.randrange(4)}"

    def _write(self, c: SyncClient, local: list[Op], name: str, key: str, value: str) -> None:
        if c.leader is None:
            c.leader = self.leader_hint or random.choice(sorted(self.nodes))
        call = self.now()
        outcome, result = UNKNOWN, None
        try:
            c.pipeline([kv.encode_put(key, value)], window=1)
            outcome = OK
            self.leader_hint = c.leader
            if key.startswith("u-"):
                with self.lock:
                    self.acked[key] = value
        except ClientError as exc:
            if exc.status == NOT_LEADER:  # certainly not applied; follow the hint
                outcome = FAIL
                c.leader = exc.detail if exc.detail in self.nodes else None
            elif exc.status == "error":
                outcome = FAIL
            if c.leader is None or exc.status != NOT_LEADER:
                c.close()
                time.sleep(0.05)
        except ConnectionRefusedError:  # nothing was sent: certainly not applied
            outcome = FAIL
            c.close()
            c.leader = None
            time.sleep(0.05)
        except OSError:  # timeout, reset: it may or may not have been applied
            c.close()
            c.leader = None
            time.sleep(0.05)
        local.append(Op(name, "put", key, call, self.now() if outcome != UNKNOWN else
                        float("inf"), outcome, value=value, result=result))

    def _read(self, c: SyncClient, local: list[Op], name: str, key: str) -> None:
        call = self.now()
        try:
            result = c.request(kv.encode_get(key), read=True,
                               deadline=time.monotonic() + 2.0)
        except (ClientError, OSError):
            c.close()
            return  # an unknown read constrains nothing
        local.append(Op(name, "get", key, call, self.now(), OK, result=result))


def raft_loop(kills: int, nodes: int = 3, threads: int = 4, seed: int = 1,
              restart_delay: tuple[float, float] = (0.2, 1.0),
              interval: tuple[float, float] = (0.5, 1.5), root: Path | None = None
              ) -> dict[str, Any]:
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="cf-kill9-")
        root = Path(tmp.name)
    rng = random.Random(seed)
    procs = RaftProcs(root, nodes)
    rep: dict[str, Any] = {"part": "raft", "nodes": nodes, "threads": threads}
    t_start = time.monotonic()
    try:
        for sid in procs.ids:
            procs.start(sid)
        killed: list[dict[str, Any]] = []
        with Load(procs.client, threads, seed) as load:
            for _ in range(kills):
                time.sleep(rng.uniform(*interval))
                hint = load.leader_hint
                target = hint if len(killed) % 3 == 0 and hint in procs.procs \
                    else rng.choice(sorted(procs.procs))
                at = load.now()
                procs.kill(target)
                time.sleep(rng.uniform(*restart_delay))
                t0 = time.monotonic()
                procs.start(target)
                killed.append({"node": target, "leader": target == hint, "at": at,
                               "restart_s": round(time.monotonic() - t0, 2)})
            # a last quiet moment under load: every node back and serving
            time.sleep(1.0)
        rep["load_seconds"] = round(time.monotonic() - t_start, 1)
        # read back every acknowledged unique write through the leader
        t0 = time.monotonic()
        missing: list[str] = []
        with SyncClient(procs.client, timeout=10) as c:
            c.request(kv.encode_get("probe"), deadline=time.monotonic() + 30)
            rep["recover_seconds"] = round(time.monotonic() - t0, 2)
            for key, value in sorted(load.acked.items()):
                if c.request(kv.encode_get(key), read=True) != value:
                    missing.append(key)
            rep["final_leader"] = c.leader
        ops = load.ops
        # time from each kill to the next acknowledged write (the write outage it caused)
        acks = sorted(o.ret for o in ops if o.op == "put" and o.outcome == OK)
        outage = []
        for k in killed:
            nxt = next((t for t in acks if t > k["at"]), None)
            if nxt is not None:
                outage.append(nxt - k["at"])
        leader_outage = [nxt - k["at"] for k in killed if k["leader"]
                         for nxt in [next((t for t in acks if t > k["at"]), None)]
                         if nxt is not None]
        verdict = check_history(ops)
        audit = procs.audit()
        alive = {sid: p.poll() is None for sid, p in procs.procs.items()}
        writes = [o for o in ops if o.op == "put"]
        rep.update(
            kills=len(killed), leader_kills=sum(k["leader"] for k in killed),
            kills_per_node={s: sum(k["node"] == s for k in killed) for s in procs.ids},
            write_outage_after_kill_s={
                "median": round(statistics.median(outage), 3) if outage else None,
                "max": round(max(outage), 3) if outage else None},
            write_outage_after_leader_kill_s={
                "median": round(statistics.median(leader_outage), 3) if leader_outage else None,
                "max": round(max(leader_outage), 3) if leader_outage else None},
            restart_seconds_median=statistics.median(k["restart_s"] for k in killed)
            if killed else None,
            ops=len(ops), acknowledged_writes=sum(o.outcome == OK for o in writes),
            acknowledged_unique_writes=len(load.acked), failed_writes=sum(
                o.outcome == FAIL for o in writes),
            unknown_writes=sum(o.outcome == UNKNOWN for o in writes),
            reads=sum(o.op == "get" for o in ops), missing_acknowledged=missing[:20],
            missing_count=len(missing), linearizable=verdict.ok,
            linearizability_problems=verdict.problems[:5], undecided_keys=verdict.undecided_keys,
            raft_safety_violations=audit.violations[:5], elections=audit.elections,
            all_alive=all(alive.values()) and len(alive) == nodes,
            seconds=round(time.monotonic() - t_start, 1))
        return rep
    finally:
        procs.stop()
        if tmp is not None:
            tmp.cleanup()


# -- cluster-node ------------------------------------------------------------------------


class ClusterProcs:
    def __init__(self, root: Path, n: int = 3) -> None:
        self.root = root
        self.ids = [chr(ord("a") + i) for i in range(n)]
        self.ports = {k: {p: free_port() for p in ("gossip", "raft", "coord", "mgmt")}
                      for k in self.ids}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, sid: str, first: bool = False) -> None:
        p = self.ports[sid]
        argv = [*PY, "cluster-node", "--insecure", "--id", sid, "--shards", "100",
                "--data-dir", str(self.root / sid), "--gossip-port", str(p["gossip"]),
                "--raft-port", str(p["raft"]), "--coord-port", str(p["coord"]),
                "--management-port", str(p["mgmt"]), "--trace",
                str(self.root / f"{sid}.jsonl")]
        if not first:
            for o in self.ids:
                if o != sid:
                    argv += ["--join", f"127.0.0.1:{self.ports[o]['gossip']}"]
        self.procs[sid] = spawn(self.root, sid, argv)

    def kill(self, sid: str) -> None:
        p = self.procs.pop(sid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def get(self, sid: str, path: str) -> Any:
        try:
            url = f"http://127.0.0.1:{self.ports[sid]['mgmt']}{path}"
            with urllib.request.urlopen(url, timeout=3) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def view(self) -> dict[str, Any]:
        return {s: self.get(s, "/v1/status") for s in self.ids}

    def agreed(self) -> bool:
        v = self.view()
        if any(x is None for x in v.values()):
            return False
        return (all(x["state"] == "operational" and sorted(x["nodes"]) == self.ids
                    for x in v.values())
                and len({(x["map_index"], x["leader"]) for x in v.values()}) == 1)

    def leader(self) -> str | None:
        for x in self.view().values():
            if x is not None and x.get("leader") in self.ids:
                return str(x["leader"])
        return None

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)  # no graceful leave: keep the data as is
        for p in self.procs.values():
            p.wait(10)


def cluster_loop(kills: int, seed: int = 1, restart_delay: tuple[float, float] = (0.2, 1.0),
                 root: Path | None = None, settle_timeout: float = 60.0) -> dict[str, Any]:
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="cf-kill9c-")
        root = Path(tmp.name)
    rng = random.Random(seed)
    procs = ClusterProcs(root)
    rep: dict[str, Any] = {"part": "cluster", "nodes": len(procs.ids)}
    t_start = time.monotonic()
    try:
        procs.start(procs.ids[0], first=True)
        time.sleep(1.0)
        for sid in procs.ids[1:]:
            procs.start(sid)
        if not wait_until(procs.agreed, settle_timeout, 0.2):
            raise RuntimeError(f"cluster never formed: {procs.view()}")
        killed: list[dict[str, Any]] = []
        recover: list[float] = []
        not_recovered = 0
        for i in range(kills):
            ldr = procs.leader()
            target = ldr if i % 3 == 0 and ldr in procs.procs else rng.choice(sorted(procs.procs))
            procs.kill(target)
            time.sleep(rng.uniform(*restart_delay))
            t0 = time.monotonic()
            procs.start(target)
            ok = wait_until(procs.agreed, settle_timeout, 0.1)
            if ok:
                recover.append(time.monotonic() - t0)
            else:
                not_recovered += 1
            killed.append({"node": target, "leader": target == ldr, "recovered": ok})
        # the end state: a reshard may start just after the last recovery (the restarted
        # node is re-added): judge the cluster once it has settled, within the same bound
        wait_until(procs.agreed, settle_timeout, 0.1)
        final = procs.view()
        maps = {s: procs.get(s, "/v1/nodes") for s in procs.ids}
        alive = {s: p.poll() is None for s, p in procs.procs.items()}
        digests = {json.dumps(m, sort_keys=True) for m in maps.values()}
        rep.update(
            kills=len(killed), leader_kills=sum(k["leader"] for k in killed),
            not_recovered=not_recovered,
            recover_seconds_median=round(statistics.median(recover), 2) if recover else None,
            recover_seconds_max=round(max(recover), 2) if recover else None,
            all_alive=all(alive.values()) and len(alive) == len(procs.ids),
            all_operational=all(v is not None and v["state"] == "operational"
                                for v in final.values()),
            one_map=len(digests) == 1 and None not in maps.values(),
            final={s: {k: v.get(k) for k in ("state", "role", "leader", "term", "map_index",
                                             "nodes")} if v else None
                   for s, v in final.items()},
            seconds=round(time.monotonic() - t_start, 1))
        return rep
    finally:
        procs.stop()
        if tmp is not None:
            tmp.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("raft", "cluster", "both"), default="both")
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs in the Raft KV loop")
    ap.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    ap.add_argument("--cluster-kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = []
    if args.part in ("raft", "both"):
        out.append(raft_loop(args.kills, args.nodes, args.threads, args.seed))
    if args.part in ("cluster", "both"):
        out.append(cluster_loop(args.cluster_kills, args.seed))
    if args.json:
        print(json.dumps(out, indent=1, sort_keys=True))
    else:
        for r in out:
            print(json.dumps(r, sort_keys=True))
    ok = all(r.get("all_alive") for r in out) and all(
        r.get("missing_count", 0) == 0 and r.get("linearizable", True) is not False
        and not r.get("raft_safety_violations") for r in out) and all(
        r.get("one_map", True) for r in out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
