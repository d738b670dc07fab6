"""Attack live ``cluster-node`` and ``raft-node`` processes on loopback (issue 11).

Starts three ``cluster-node --data-dir`` processes (a, b, c) and three
``raft-node --store sqlite`` processes (n1, n2, n3), waits for a leader in each,
records leader, term and every process's RSS, then attacks every port from this
process (not a member): random bytes, truncated / oversized / zero-length frames,
valid msgpack of the wrong shape, forged Raft messages from a non-member
(``RequestVote`` with a huge term and the transfer flag, ``AppendEntries``,
``Heartbeat`` with a higher term by UDP and by TCP), forged coordination messages
(``Ack``; ``LeaveRequest`` naming a live node), idle connections that sent a valid
hello, and slow-loris frames (a header, then one byte per second).

Two phases of forged messages:

* *non-member*: messages signed "mallory" (not in any configuration), and every
  forged message by UDP. These must change nothing in either mode.
* *impersonation* (run last): messages claiming to come from a member, over TCP. With
  ``--tls`` the attacker holds a valid certificate of the cluster CA in the name
  "mallory", so its claim to be a member is refused; with ``--insecure`` there is no
  identity to check and the report says what these messages still do.

Afterwards: every process is up, leader and term are unchanged by the non-member
phase (and, with TLS, by the impersonation phase), RSS grew by less than 50 MB, and
the counters (management ``/metrics``, traces' ``net.malformed``, stderr) show what
was dropped. Prints one JSON document with ``--json``.

    python benchmarks/attack.py --mode both --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack

from clusterfunk.raft import kv
from clusterfunk.raft.client import ClientError, SyncClient
from clusterfunk.raft.messages import Entry, pack_entries
from clusterfunk.runtime.framing import encode_hello
from clusterfunk.runtime.net import free_port

try:
    from benchmarks.procs import PY, rss_kb, spawn, stop_all, wait_until
except ModuleNotFoundError:  # run as a script: benchmarks/ is sys.path[0]
    from procs import PY, rss_kb, spawn, stop_all, wait_until  # type: ignore[no-redef]

CLUSTER = ("a", "b", "c")
RAFT = ("n1", "n2", "n3")
ATTACKER = "mallory"
_LEN = struct.Struct(">I")
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
# wire tags (clusterfunk/raft/messages.py, clusterfunk/cluster/messages.py)
T_RV, T_AE, T_HB, T_ACK, T_LEAVE = 32, 34, 36, 192, 193


# -- the processes ---------------------------------------------------------------------


class Procs:
    """Three cluster-nodes and three raft-nodes, stdout/stderr to files."""

    def __init__(self, root: Path, tls: bool) -> None:
        self.root = root
        self.tls = tls
        self.certs = root / "certs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, dict[str, int]] = {}
        for n in CLUSTER:
            self.ports[n] = {k: free_port() for k in ("gossip", "raft", "coord", "mgmt")}
        for n in RAFT:
            self.ports[n] = {"raft": free_port(), "client": free_port()}
        if tls:
            subprocess.run([*PY, "certs", "--out", str(self.certs), "--nodes",
                            ",".join([*CLUSTER, *RAFT, ATTACKER])], check=True,
                           capture_output=True)

    def _sec(self) -> list[str]:
        return ["--tls-dir", str(self.certs)] if self.tls else ["--insecure"]

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs[name] = spawn(self.root, name, argv)

    def start_cluster(self, n: str) -> None:
        p = self.ports[n]
        argv = [*PY, "cluster-node", *self._sec(), "--id", n, "--shards", "100",
                "--data-dir", str(self.root / n), "--gossip-port", str(p["gossip"]),
                "--raft-port", str(p["raft"]), "--coord-port", str(p["coord"]),
                "--management-port", str(p["mgmt"]), "--trace", str(self.trace(n))]
        if n != CLUSTER[0]:
            argv += ["--join", f"127.0.0.1:{self.ports[CLUSTER[0]]['gossip']}"]
        self._spawn(n, argv)

    def start_raft(self, n: str) -> None:
        peers = ",".join(f"{k}=127.0.0.1:{self.ports[k]['raft']}" for k in RAFT)
        p = self.ports[n]
        self._spawn(n, [*PY, "raft-node", *self._sec(), "--id", n,
                        "--bind", f"127.0.0.1:{p['raft']}", "--peers", peers,
                        "--data-dir", str(self.root / n), "--store", "sqlite",
                        "--client-bind", f"127.0.0.1:{p['client']}",
                        "--election-timeout", "0.5", "--trace", str(self.trace(n))])

    def trace(self, n: str) -> Path:
        return self.root / f"{n}.jsonl"

    def start_all(self) -> None:
        for n in RAFT:
            self.start_raft(n)
        self.start_cluster(CLUSTER[0])
        time.sleep(1.0)
        for n in CLUSTER[1:]:
            self.start_cluster(n)

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def rss(self) -> dict[str, int]:
        return {n: rss_kb(p.pid) for n, p in self.procs.items() if p.poll() is None}

    def stop(self) -> None:
        stop_all(self.procs.values())

    # -- observing --------------------------------------------------------------------

    def ssl_client(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(self.certs / "client.pem"), str(self.certs / "client-key.pem"))
        return ctx

    def http(self, n: str, path: str, timeout: float = 5.0) -> bytes:
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://127.0.0.1:{self.ports[n]['mgmt']}{path}"
        ctx = self.ssl_client() if self.tls else None
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            data: bytes = r.read()
            return data

    def status(self, n: str) -> dict[str, Any] | None:
        try:
            st: dict[str, Any] = json.loads(self.http(n, "/v1/status"))
            return st
        except (OSError, ValueError):
            return None

    def cluster_view(self) -> dict[str, Any]:
        """Leader, term, map nodes as each cluster node reports them."""
        return {n: _pick(self.status(n)) for n in CLUSTER}

    def metrics(self, n: str) -> dict[str, float]:
        """The counters of /metrics whose name mentions a drop, as name{labels} -> value."""
        out: dict[str, float] = {}
        try:
            text = self.http(n, "/metrics").decode()
        except OSError:
            return out
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            if any(w in name for w in ("malformed", "oversize", "dropped", "unauthorized",
                                       "rejected", "timeouts", "evicted")):
                with contextlib.suppress(ValueError):
                    v = float(value)
                    if v:
                        out[name] = v
        return out

    def kv_client(self, timeout: float) -> SyncClient:
        """A client of the raft-nodes (with the "client" certificate under TLS)."""
        ctx = None
        if self.tls:
            from clusterfunk.runtime.tls import load_tls_dir

            ctx = load_tls_dir(self.certs, "client").client_context
        return SyncClient({k: f"127.0.0.1:{self.ports[k]['client']}" for k in RAFT},
                          timeout=timeout, ssl_context=ctx)

    def raft_leader(self, timeout: float = 10.0) -> str | None:
        c = self.kv_client(timeout)
        try:
            c.request(kv.encode_get("probe"), deadline=time.monotonic() + timeout)
            return c.leader
        except (ClientError, OSError):
            return None
        finally:
            c.close()

    def raft_terms(self) -> dict[str, int]:
        """Each raft-node's latest term, from its trace's raft.role records."""
        terms: dict[str, int] = {}
        for n in RAFT:
            t = 0
            with contextlib.suppress(OSError):
                for line in self.trace(n).read_text().splitlines():
                    if '"raft.role"' in line:
                        with contextlib.suppress(ValueError):
                            t = max(t, int(json.loads(line).get("term", 0)))
            terms[n] = t
        return terms

    def trace_counts(self, n: str, events: tuple[str, ...] = ("net.malformed",)) -> dict[str, int]:
        counts = dict.fromkeys(events, 0)
        with contextlib.suppress(OSError):
            for line in self.trace(n).read_text().splitlines():
                for ev in events:
                    if f'"{ev}"' in line:
                        counts[ev] += 1
        return counts

    def stderr_counts(self, n: str) -> dict[str, int]:
        keys = {"closing connection": 0, "TLS handshake failed": 0, "frame not complete": 0,
                "Traceback": 0}
        with contextlib.suppress(OSError):
            text = (self.root / f"{n}.err").read_text(errors="replace")
            for k in keys:
                keys[k] = text.count(k)
        return keys


def _pick(st: dict[str, Any] | None) -> dict[str, Any] | None:
    if st is None:
        return None
    return {k: st.get(k) for k in ("role", "leader", "term", "state", "map_nodes", "nodes")
            if k in st}


# -- the attacker ----------------------------------------------------------------------


class Attacker:
    """Connections from a process that is not a member. With ``ctx`` (TLS) it holds a
    certificate of the cluster CA in the name "mallory" (``ctx``) for TLS ports."""

    def __init__(self, procs: Procs, rng: random.Random) -> None:
        self.p = procs
        self.rng = rng
        self.ctx: ssl.SSLContext | None = None
        if procs.tls:
            ctx = ssl.create_default_context(cafile=str(procs.certs / "ca.pem"))
            ctx.check_hostname = False
            ctx.load_cert_chain(str(procs.certs / f"{ATTACKER}.pem"),
                                str(procs.certs / f"{ATTACKER}-key.pem"))
            self.ctx = ctx
        self.counts: dict[str, dict[str, int]] = {}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.udp.getsockname()[1]}"

    def close(self) -> None:
        self.udp.close()

    def count(self, attack: str, key: str, n: int = 1) -> None:
        c = self.counts.setdefault(attack, {})
        c[key] = c.get(key, 0) + n

    def tls_port(self, node: str, port: str) -> bool:
        return self.p.tls and port in ("raft", "coord", "mgmt", "client")

    def stream_ports(self) -> list[tuple[str, str]]:
        out = [(n, k) for n in CLUSTER for k in ("gossip", "raft", "coord", "mgmt")]
        return out + [(n, k) for n in RAFT for k in ("raft", "client")]

    def udp_ports(self) -> list[tuple[str, str]]:
        return [(n, k) for n in CLUSTER for k in ("gossip", "raft", "coord")] + [
            (n, "raft") for n in RAFT]

    def connect(self, node: str, port: str, *, hello: str | None = "", claim: str | None = None,
                tls: bool | None = None, timeout: float = 5.0) -> socket.socket:
        """A connection to ``node``'s ``port``; a valid hello unless ``hello`` is None
        (``""``: this attacker's own address; ``claim``: the node id claimed)."""
        s = socket.create_connection(("127.0.0.1", self.p.ports[node][port]), timeout=timeout)
        use_tls = self.tls_port(node, port) if tls is None else tls
        if use_tls:
            assert self.ctx is not None
            s = self.ctx.wrap_socket(s)
        if hello is not None:
            addr = hello or self.addr
            ident = claim if claim is not None else (ATTACKER if use_tls else None)
            s.sendall(encode_hello(addr, ident))
        return s

    def send_frames(self, node: str, port: str, frames: list[bytes], attack: str,
                    claim: str | None = None) -> None:
        try:
            with self.connect(node, port, claim=claim) as s:
                s.sendall(b"".join(_LEN.pack(len(f)) + f for f in frames))
                _linger(s)
            self.count(attack, "frames", len(frames))
        except (OSError, ssl.SSLError):
            self.count(attack, "connect_failed")

    def send_datagrams(self, node: str, port: str, data: list[bytes], attack: str) -> None:
        for d in data:
            try:
                self.udp.sendto(d, ("127.0.0.1", self.p.ports[node][port]))
                self.count(attack, "datagrams")
            except OSError:
                self.count(attack, "send_failed")

    # -- the attacks ------------------------------------------------------------------

    def random_bytes(self, rounds: int) -> None:
        r = self.rng
        for node, port in self.udp_ports():
            self.send_datagrams(node, port, [r.randbytes(r.randint(1, 1400))
                                             for _ in range(rounds)], "random_bytes")
        for node, port in self.stream_ports():
            for i in range(max(1, rounds // 10)):
                data = r.randbytes(r.randint(1, 8192))
                try:
                    # half: raw garbage; half: garbage after a valid hello
                    with self.connect(node, port, hello=None if i % 2 else "") as s:
                        s.sendall(data)
                        _linger(s)
                    self.count("random_bytes", "connections")
                except (OSError, ssl.SSLError):
                    self.count("random_bytes", "connect_failed")

    def bad_frames(self, rounds: int) -> None:
        for node, port in self.stream_ports():
            for _ in range(rounds):
                for kind, payload in (
                    ("truncated", _LEN.pack(1000) + b"x" * 10),
                    ("oversized", _LEN.pack(0xFFFFFFFF) + b"x" * 100),
                    ("oversized_64m", _LEN.pack(64 * 1024 * 1024 + 1)),
                    ("zero_length", _LEN.pack(0)),
                ):
                    try:
                        with self.connect(node, port) as s:
                            s.sendall(payload)
                            _linger(s)
                        self.count("bad_frames", kind)
                    except (OSError, ssl.SSLError):
                        self.count("bad_frames", "connect_failed")
        # truncated and oversized datagrams too (over 64 KiB cannot be sent)
        for node, port in self.udp_ports():
            self.send_datagrams(node, port, [_pack([1, T_HB, 5])[:3], b"\x93" + b"\xff" * 60000],
                                "bad_frames")

    def wrong_shape(self, rounds: int) -> None:
        shapes = [
            _pack([1, T_RV]), _pack([1, T_RV, "x", "y", "z", 1, 2, 3, 4, 5]),
            _pack([1, T_HB, -5, ATTACKER, 0, 0]), _pack([1, T_HB, 2**63, ATTACKER, 0, 0]),
            _pack([1, T_HB, 2**62 + 1, ATTACKER, 0, 0]), _pack([2, T_HB, 1, ATTACKER, 0, 0]),
            _pack([1, 250, 1, 2]), _pack([1, T_AE, 1, ATTACKER, 0, 0, b"\xc1\xc1", 0]),
            _pack([1, T_ACK, 5, "x"]), _pack([1, T_LEAVE]), _pack({"term": 1}), _pack("hello"),
            _pack([1, 91, 1, "ok", None, None]), _pack([1, 90, "id", 1, 1]),
            _pack([1, 1, [1, 2, 3], {"a": b"b"}]), _pack([None] * 100),
        ]
        for _ in range(rounds):
            for node, port in self.stream_ports():
                self.send_frames(node, port, shapes, "wrong_shape")
            for node, port in self.udp_ports():
                self.send_datagrams(node, port, shapes, "wrong_shape")

    def forged_nonmember(self, rounds: int, term: int) -> None:
        """Raft and coordination messages signed by a non-member, by TCP and UDP, and
        every Raft message by UDP (Raft takes no datagrams)."""
        big = term + 10**6
        batch = pack_entries([Entry(big, 1, b"forged")])
        raft = [
            _pack([1, T_RV, 2**63, ATTACKER, 10**9, 2**63, False, True]),  # out of range
            _pack([1, T_RV, big, ATTACKER, 10**9, big, False, True]),
            _pack([1, T_AE, big, ATTACKER, 0, 0, batch, 10**6]),
            _pack([1, T_HB, big, ATTACKER, 10**6, 0]),
        ]
        coord = [_pack([1, T_ACK, ATTACKER, 10**6]), _pack([1, T_ACK, "a", 10**6]),
                 _pack([1, T_LEAVE, ATTACKER])]
        member = {n: (CLUSTER if n in CLUSTER else RAFT) for n in (*CLUSTER, *RAFT)}
        for _ in range(rounds):
            for node in (*CLUSTER, *RAFT):
                self.send_frames(node, "raft", raft, "forged_nonmember_tcp")
                self.send_datagrams(node, "raft", raft, "forged_nonmember_udp")
                # a member's name by UDP: Raft takes no datagrams in either mode
                other = next(m for m in member[node] if m != node)
                self.send_datagrams(node, "raft", [
                    _pack([1, T_HB, big, other, 10**6, 0]),
                    _pack([1, T_RV, big, other, 10**9, big, False, True])],
                    "forged_member_udp")
            for node in CLUSTER:
                self.send_frames(node, "coord", coord, "forged_nonmember_tcp")
                self.send_datagrams(node, "coord", coord, "forged_nonmember_udp")

    def impersonate(self, rounds: int, term: int, cluster_leader: str | None,
                    raft_leader: str | None) -> None:
        """Messages claiming to be from a member, over TCP (a TLS attacker's hello
        claims the member too, with its "mallory" certificate)."""
        big = term + 10**6
        for _ in range(rounds):
            for leader, group in ((cluster_leader, CLUSTER), (raft_leader, RAFT)):
                if leader is None:
                    continue
                victim = next(m for m in group if m != leader)
                forged = [_pack([1, T_HB, big, victim, 0, 0]),
                          _pack([1, T_RV, big, victim, 10**9, big, False, True])]
                claim = victim if self.p.tls else None
                self.send_frames(leader, "raft", forged, "impersonate_tcp", claim=claim)
        if cluster_leader is not None:
            victim = next(m for m in CLUSTER if m != cluster_leader)
            self.send_frames(cluster_leader, "coord", [_pack([1, T_LEAVE, victim])],
                             "impersonate_leave", claim=victim if self.p.tls else None)

    def tls_strangers(self, rounds: int, foreign: ssl.SSLContext) -> None:
        """TLS ports only: a client without a certificate, and one whose certificate
        comes from another CA. Both handshakes must fail."""
        for node, port in self.stream_ports():
            if not self.tls_port(node, port):
                continue
            for _ in range(rounds):
                for kind in ("no_certificate", "foreign_ca"):
                    try:
                        raw = socket.create_connection(("127.0.0.1", self.p.ports[node][port]),
                                                       timeout=5)
                        if kind == "no_certificate":
                            ctx = ssl.create_default_context(
                                cafile=str(self.p.certs / "ca.pem"))
                            ctx.check_hostname = False
                        else:
                            ctx = foreign
                        with ctx.wrap_socket(raw) as s:
                            s.sendall(encode_hello(self.addr, ATTACKER) + _LEN.pack(3) + b"abc")
                            # TLS 1.3: the server's refusal of our certificate arrives
                            # after our handshake "completed"
                            s.settimeout(2)
                            if s.recv(1) == b"":
                                raise ConnectionResetError
                        self.count("tls_strangers", f"{kind}_accepted")
                    except (OSError, ssl.SSLError):
                        self.count("tls_strangers", f"{kind}_refused")

    def idle(self, n: int, targets: list[tuple[str, str]], probe: Any) -> dict[str, Any]:
        """``n`` connections per target that sent a valid hello (each from a different
        claimed address), held while ``probe()`` checks the cluster still works."""
        held: list[socket.socket] = []
        res: dict[str, Any] = {}
        try:
            for node, port in targets:
                ok = 0
                for _ in range(n):
                    try:
                        r = self.rng
                        hello = f"127.0.0.{r.randint(2, 250)}:{r.randint(1024, 65000)}"
                        held.append(self.connect(node, port, hello=hello if port != "client"
                                                 and port != "mgmt" else None))
                        ok += 1
                    except (OSError, ssl.SSLError):
                        self.count("idle", "connect_failed")
                self.count("idle", f"{node}.{port}", ok)
            time.sleep(1.0)
            res["probe_while_held"] = probe()
            # how many of the held connections the nodes closed (evicted)
            closed = sum(1 for s in held if _closed(s))
            res["closed_by_node"] = closed
            res["held"] = len(held)
        finally:
            for s in held:
                with contextlib.suppress(OSError):
                    s.close()
        return res


def _linger(s: socket.socket, wait: float = 0.02) -> None:
    """Give the node a moment to read before we close (and read what it says)."""
    s.settimeout(wait)
    with contextlib.suppress(OSError, ssl.SSLError):
        s.recv(4096)


def _closed(s: socket.socket) -> bool:
    s.settimeout(0.0)
    try:
        return s.recv(1) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except (OSError, ssl.SSLError):
        return True


def slow_loris(att: Attacker, targets: list[tuple[str, str]], per_target: int,
               duration: float, out: dict[str, Any]) -> None:
    """Per target port, ``per_target`` connections of each kind, then one more byte
    per second on each: ``frame`` sends a valid hello and a frame header (1000 bytes)
    first (an HTTP request line on the management port); ``hello`` sends only the
    first byte of a hello. Records when each connection was closed by the node."""
    socks: list[tuple[str, socket.socket, float]] = []
    for node, port in targets:
        for kind in ("frame", "hello"):
            if kind == "hello" and port in ("client", "mgmt"):
                continue  # no hello on these ports
            for _ in range(per_target):
                try:
                    if kind == "frame":
                        s = att.connect(node, port,
                                        hello="" if port not in ("client", "mgmt") else None)
                        s.sendall(_LEN.pack(1000) if port != "mgmt"
                                  else b"POST /v1/status HTTP/1.1\r\n")
                    else:
                        s = att.connect(node, port, hello=None)
                        s.sendall(encode_hello(att.addr, ATTACKER)[:1])
                    socks.append((f"{kind}:{node}.{port}", s, time.monotonic()))
                except (OSError, ssl.SSLError):
                    att.count("slow_loris", "connect_failed")
    closed_after: dict[str, list[float]] = {}
    bytes_sent = 0
    deadline = time.monotonic() + duration
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        time.sleep(1.0)
        still = []
        for key, s, t0 in open_:
            try:
                if _closed(s):
                    raise ConnectionResetError
                s.settimeout(1.0)
                s.sendall(b"x")
                bytes_sent += 1
                still.append((key, s, t0))
            except (OSError, ssl.SSLError):
                closed_after.setdefault(key, []).append(round(time.monotonic() - t0, 1))
        open_ = still
    for _, s, _ in socks:
        with contextlib.suppress(OSError):
            s.close()
    out.update(connections=len(socks), bytes_sent=bytes_sent,
               closed_by_node=sum(len(v) for v in closed_after.values()),
               still_open_at_end=len(open_),
               max_seconds_open=max((x for v in closed_after.values() for x in v), default=None),
               closed_after_by_port={k: max(v) for k, v in sorted(closed_after.items())})


# -- one run ---------------------------------------------------------------------------


def run(tls: bool, *, rounds: int = 20, idle: int = 500, loris: int = 5,
        loris_seconds: float = 40.0, impersonate: bool = True, seed: int = 1,
        settle: float = 3.0, root: Path | None = None) -> dict[str, Any]:
    """Start both clusters, attack them, return the report (see the module doc)."""
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="cf-attack-")
        root = Path(tmp.name)
    procs = Procs(root, tls)
    rep: dict[str, Any] = {"mode": "tls" if tls else "insecure"}
    t_start = time.monotonic()
    try:
        procs.start_all()

        def cluster_ready() -> bool:
            v = procs.cluster_view()
            return all(x is not None and x.get("state") == "operational"
                       and x.get("leader") is not None and len(x.get("map_nodes") or
                                                               x.get("nodes") or []) == 3
                       for x in v.values())

        ok = wait_until(cluster_ready, 60, 0.2)
        rl = procs.raft_leader(20)
        if not ok or rl is None:
            dead = {n: (root / f"{n}.err").read_text(errors="replace")[-1500:]
                    for n, up in procs.alive().items() if not up}
            raise RuntimeError(f"no stable start: cluster {procs.cluster_view()}, raft {rl}, "
                               f"alive {procs.alive()}, stderr of the dead: {dead}")
        time.sleep(1.0)
        before = _snapshot(procs)
        rep["before"] = before
        rep["startup_seconds"] = round(time.monotonic() - t_start, 1)
        att = Attacker(procs, random.Random(seed))
        cl_leader = before["cluster"][CLUSTER[0]]["leader"]
        term = max([before["cluster_term"], *before["raft_terms"].values()])
        phases: dict[str, Any] = {}
        loris_out: dict[str, Any] = {}
        loris_targets = [(cl_leader, "raft"), (cl_leader, "coord"), (cl_leader, "gossip"),
                         (cl_leader, "mgmt"), (before["raft_leader"], "raft"),
                         (before["raft_leader"], "client")]
        lt = threading.Thread(target=slow_loris, args=(Attacker(procs, random.Random(seed + 1)),
                                                       loris_targets, loris, loris_seconds,
                                                       loris_out), daemon=True)
        lt.start()
        for name, fn in (("random_bytes", lambda: att.random_bytes(rounds * 5)),
                         ("bad_frames", lambda: att.bad_frames(max(1, rounds // 4))),
                         ("wrong_shape", lambda: att.wrong_shape(max(1, rounds // 4))),
                         ("forged_nonmember", lambda: att.forged_nonmember(rounds, term)),
                         ("tls_strangers", lambda: att.tls_strangers(max(1, rounds // 4),
                                                                     foreign_ctx(root)))):
            if name == "tls_strangers" and not tls:
                continue
            t0 = time.monotonic()
            fn()
            phases[name] = {"seconds": round(time.monotonic() - t0, 2)}

        def probe() -> dict[str, Any]:
            t0 = time.monotonic()
            ldr = procs.raft_leader(10)
            c = procs.kv_client(10)
            wrote = False
            try:
                c.request(kv.encode_put("idle-probe", "v"), deadline=time.monotonic() + 10)
                wrote = True
            except (ClientError, OSError):
                pass
            finally:
                c.close()
            return {"raft_leader": ldr, "raft_write_ok": wrote,
                    "cluster": procs.cluster_view(), "seconds": round(time.monotonic() - t0, 2)}

        t0 = time.monotonic()
        idle_targets = [(cl_leader, "raft"), (cl_leader, "coord"), (cl_leader, "gossip"),
                        (before["raft_leader"], "raft"), (before["raft_leader"], "client")]
        phases["idle"] = att.idle(idle, idle_targets, probe)
        phases["idle"]["seconds"] = round(time.monotonic() - t0, 2)
        lt.join(loris_seconds + 30)
        phases["slow_loris"] = loris_out
        time.sleep(1.5)
        after = _snapshot(procs)
        rep["after_nonmember"] = after
        rep["unchanged_by_nonmember"] = _same_leaders(before, after)
        if impersonate:
            att.impersonate(max(1, rounds // 4), term, cl_leader, before["raft_leader"])
            time.sleep(settle)
            imp = _snapshot(procs)
            rep["after_impersonation"] = imp
            rep["unchanged_by_impersonation"] = _same_leaders(before, imp)
        att.close()
        rep["attacks"] = att.counts
        rep["phases"] = phases
        rep["alive"] = procs.alive()
        end_rss = procs.rss()
        rep["rss_kb_before"] = before["rss_kb"]
        rep["rss_kb_after"] = end_rss
        rep["rss_growth_mb_max"] = round(max(
            (end_rss.get(n, 0) - before["rss_kb"][n]) / 1024 for n in before["rss_kb"]), 1)
        rep["counters"] = {
            n: {"metrics": procs.metrics(n) if n in CLUSTER else {},
                "trace": procs.trace_counts(n), "stderr": procs.stderr_counts(n)}
            for n in (*CLUSTER, *RAFT)}
        rep["seconds"] = round(time.monotonic() - t_start, 1)
        return rep
    finally:
        procs.stop()
        if tmp is not None:
            tmp.cleanup()


def foreign_ctx(root: Path) -> ssl.SSLContext:
    """A client context holding a certificate from a CA the cluster does not trust."""
    other = root / "foreign"
    if not (other / "ca.pem").exists():
        subprocess.run([*PY, "certs", "--out", str(other), "--nodes", ATTACKER], check=True,
                       capture_output=True)
    ctx = ssl.create_default_context(cafile=str(other / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(other / f"{ATTACKER}.pem"), str(other / f"{ATTACKER}-key.pem"))
    return ctx


def _snapshot(procs: Procs) -> dict[str, Any]:
    view = procs.cluster_view()
    terms = [v["term"] for v in view.values() if v is not None and v.get("term") is not None]
    return {"cluster": view, "cluster_term": max(terms, default=0),
            "raft_leader": procs.raft_leader(15), "raft_terms": procs.raft_terms(),
            "rss_kb": procs.rss()}


def _same_leaders(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    def leaders(s: dict[str, Any]) -> set[Any]:
        return {v.get("leader") if v else None for v in s["cluster"].values()}

    return {"cluster_leader": leaders(a) == leaders(b) and None not in leaders(b),
            "cluster_term": a["cluster_term"] == b["cluster_term"],
            "cluster_nodes": all(v is not None and len(v.get("map_nodes") or v.get("nodes")
                                                       or []) == 3
                                 for v in b["cluster"].values()),
            "raft_leader": a["raft_leader"] == b["raft_leader"],
            "raft_term": a["raft_terms"] == b["raft_terms"]}


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("insecure", "tls", "both"), default="both")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--idle", type=int, default=500, help="idle connections per target port")
    ap.add_argument("--loris", type=int, default=5, help="slow-loris connections per port")
    ap.add_argument("--loris-seconds", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the processes' files under this directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = [False, True] if args.mode == "both" else [args.mode == "tls"]
    reports = [run(m, rounds=args.rounds, idle=args.idle, loris=args.loris,
                   loris_seconds=args.loris_seconds, seed=args.seed,
                   root=_mkdir(args.keep / ("tls" if m else "insecure")) if args.keep else None)
               for m in modes]
    if args.json:
        print(json.dumps(reports, indent=1, sort_keys=True))
    else:
        for r in reports:
            print(f"{r['mode']}: alive {r['alive']}")
            print(f"  unchanged by non-member forgeries: {r['unchanged_by_nonmember']}")
            if "unchanged_by_impersonation" in r:
                print(f"  unchanged by impersonation: {r['unchanged_by_impersonation']}")
            print(f"  RSS growth max {r['rss_growth_mb_max']} MB")
            for k, v in sorted(r["attacks"].items()):
                print(f"  {k}: {v}")
            for k, v in sorted(r["phases"].items()):
                print(f"  phase {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
