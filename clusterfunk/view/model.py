"""From trace records to the compact data the viewer page draws.

One pass over the records (``docs/trace.md``), in trace order, alongside the
audit (:mod:`clusterfunk.audit`), whose violations the page lists. Everything
the page needs is reduced here to small arrays of numbers, so a 50-node,
400-second run stays a few megabytes:

* lanes: the nodes of ``sim.start`` / ``sim.add`` and every other emitting node
  (KV clients are not lanes);
* faults: crash (``sim.crash`` .. ``sim.restart``), pause (``sim.pause`` ..
  ``sim.resume``) and partition (``sim.partition`` .. ``sim.heal``) spans, link
  changes (``sim.link``), clock skews (``sim.skew``) and disk faults
  (``sim.disk``);
* Raft role and term change points per node (``raft.role``), cluster state
  change points (``cluster.state``);
* gossip views: every change of the status in one node's view of a member
  (``gossip.member``), as ``[t, observer, member, status]``; beyond
  ``max_gossip`` of them first contacts are left out (counted; the page says so)
  and every suspicion, death and recovery is still kept;
* the shard map: the first commit of each proposal index (``cluster.shardmap``),
  which map each node has in force over time, and, when the trace has
  ``shard.acquire`` / ``shard.release``, how many shards each node serves;
* messages (``net.*``, with ``--trace-net``): a send paired with its delivery or
  drop (first unmatched send of the same source, destination, kind and size);
  at most ``max_messages`` arrows, sampled evenly when there are more, plus a
  per-node count of sends in each of ``buckets`` time slices, from all of them.
"""

from __future__ import annotations

import re
from array import array
from collections import deque
from collections.abc import Iterable
from typing import Any

from clusterfunk.audit import Auditor, Options
from clusterfunk.audit.base import member_name

Record = dict[str, Any]

ROLES = ("follower", "precandidate", "candidate", "leader", "nonvoter")
STATUSES = ("alive", "suspect", "dead", "left")
CLUSTER_STATES = (
    "invalid", "starting", "joining", "operational", "voting", "resharding", "stopping",
)
DROP_REASONS = ("loss", "partition", "down", "unbound", "reset")


def _natural(name: str) -> list[Any]:
    """n2 before n10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _r(t: float) -> float:
    return round(t, 4)


class ModelBuilder:
    """Feed ``(record, where)`` in trace order, then :meth:`result`."""

    def __init__(
        self,
        *,
        max_messages: int = 120_000,
        max_gossip: int = 600_000,
        buckets: int = 800,
        audit: Options | None = None,
    ) -> None:
        self.max_messages = max_messages
        self.max_gossip = max_gossip
        self.buckets = buckets
        self.auditor = Auditor(audit)
        self.lanes: dict[str, int] = {}
        self.clients: set[str] = set()
        self.t0: float | None = None
        self.t1 = 0.0
        self.records = 0
        self.counts: dict[str, int] = {}
        self.sim_start: Record | None = None
        self.crash_open: dict[str, float] = {}
        self.pause_open: dict[str, float] = {}
        self.crashes: list[list[Any]] = []
        self.pauses: list[list[Any]] = []
        self.partitions: list[list[Any]] = []  # [t0, t1 (None: open), groups, oneway]
        self.links: list[list[Any]] = []
        self.skews: list[list[Any]] = []
        self.disks: list[list[Any]] = []  # [lane, t, kind]
        self.slow: list[list[Any]] = []  # [lane, t0, t1 | None, latency]: a slow node
        self.roles: dict[str, list[list[Any]]] = {}
        self.states: dict[str, list[list[Any]]] = {}
        self.gossip: list[list[Any]] = []
        self.gossip_dropped = 0
        self.gstatus: dict[tuple[int, int], int] = {}  # (observer, member) -> status
        self.maps: dict[int, list[Any]] = {}  # index -> [t, index, digest, moved, nodes]
        self.proposals: dict[int, float] = {}
        self.node_map: dict[str, list[list[Any]]] = {}  # node -> [[t, index], ...]
        self.serving: dict[str, set[int]] = {}
        self.shares: dict[str, list[list[Any]]] = {}
        self.sends: list[list[Any]] = []  # [t_send, t_end, src, dst, kind, fate]
        self.in_flight: dict[tuple[str, str, str], deque[tuple[int, Any]]] = {}
        self.unmapped = 0
        self.density_t = array("d")  # send times and sending lanes, for the density grid
        self.density_lane = array("i")

    # -- helpers -------------------------------------------------------------

    def lane(self, node: str) -> int:
        i = self.lanes.get(node)
        if i is None:
            i = self.lanes[node] = len(self.lanes)
        return i

    def feed(self, rec: Record, where: str) -> None:
        self.auditor.feed(rec, where)
        self.records += 1
        t = rec["t"]
        if self.t0 is None:
            self.t0 = t
        self.t1 = t
        ev = rec["ev"]
        self.counts[ev] = self.counts.get(ev, 0) + 1
        node = rec["node"]
        area = ev.partition(".")[0]
        if area == "kv":
            self.clients.add(node)
            return
        if node != "sim" and node not in self.lanes and area != "net":
            self.lane(node)
        handler = getattr(self, "_" + ev.replace(".", "_"), None)
        if handler is not None:
            handler(rec, t)

    # -- simulator -------------------------------------------------------------

    def _sim_start(self, rec: Record, t: float) -> None:
        self.sim_start = rec
        for n in rec["nodes"]:
            self.lane(n)

    def _sim_add(self, rec: Record, t: float) -> None:
        self.lane(rec["target"])

    def _sim_crash(self, rec: Record, t: float) -> None:
        self.crash_open.setdefault(rec["target"], t)
        self._close_pause(rec["target"], t)

    def _sim_restart(self, rec: Record, t: float) -> None:
        t0 = self.crash_open.pop(rec["target"], None)
        if t0 is not None:
            self.crashes.append([self.lane(rec["target"]), _r(t0), _r(t)])

    def _sim_pause(self, rec: Record, t: float) -> None:
        self.pause_open.setdefault(rec["target"], t)

    def _sim_resume(self, rec: Record, t: float) -> None:
        self._close_pause(rec["target"], t)

    def _close_pause(self, node: str, t: float) -> None:
        t0 = self.pause_open.pop(node, None)
        if t0 is not None:
            self.pauses.append([self.lane(node), _r(t0), _r(t)])

    def _sim_partition(self, rec: Record, t: float) -> None:
        groups = [[self.lane(n) for n in g] for g in rec["groups"]]
        self.partitions.append([_r(t), None, groups, bool(rec.get("oneway", False))])

    def _sim_heal(self, rec: Record, t: float) -> None:
        for p in self.partitions:
            if p[1] is None:
                p[1] = _r(t)

    def _sim_link(self, rec: Record, t: float) -> None:
        target = rec.get("target")
        if target is not None:  # one node's links only (a slow node): a span on its lane
            lane = self.lane(target)
            for span in self.slow:
                if span[0] == lane and span[2] is None:
                    span[2] = _r(t)
            default = self.links[-1][5] if self.links else 0.0
            if rec["latency"] > default:
                self.slow.append([lane, _r(t), None, rec["latency"]])
            return
        self.links.append([
            _r(t), rec["loss"], rec["duplicate"], rec["reorder"], rec["stream_reset"],
            rec["latency"], rec["jitter"],
        ])

    def _sim_disk(self, rec: Record, t: float) -> None:
        self.disks.append([self.lane(rec["target"]), _r(t), rec["kind"]])

    def _sim_skew(self, rec: Record, t: float) -> None:
        self.skews.append([self.lane(rec["target"]), _r(t), rec["offset"], rec["drift"]])

    # -- Raft, cluster ---------------------------------------------------------------

    def _raft_role(self, rec: Record, t: float) -> None:
        role = rec["role"]
        self.roles.setdefault(rec["node"], []).append(
            [_r(t), ROLES.index(role) if role in ROLES else 0, rec["term"]]
        )

    def _cluster_state(self, rec: Record, t: float) -> None:
        s = rec["state"]
        self.states.setdefault(rec["node"], []).append(
            [_r(t), CLUSTER_STATES.index(s) if s in CLUSTER_STATES else 0, rec["role"]]
        )

    def _cluster_shardmap(self, rec: Record, t: float) -> None:
        index = rec["index"]
        if rec["phase"] == "proposed":
            self.proposals.setdefault(index, _r(t))
            return
        if index not in self.maps:
            self.maps[index] = [
                _r(t), index, rec["digest"], rec["moved"], [self.lane(n) for n in rec["nodes"]],
            ]
        self.node_map.setdefault(rec["node"], []).append([_r(t), index])

    def _shard_acquire(self, rec: Record, t: float) -> None:
        mine = self.serving.setdefault(rec["node"], set())
        mine.update(rec["shards"])
        self.shares.setdefault(rec["node"], []).append([_r(t), len(mine)])

    def _shard_release(self, rec: Record, t: float) -> None:
        mine = self.serving.setdefault(rec["node"], set())
        mine.difference_update(rec["shards"])
        self.shares.setdefault(rec["node"], []).append([_r(t), len(mine)])

    # -- gossip ------------------------------------------------------------------------

    def _gossip_member(self, rec: Record, t: float) -> None:
        """Keep status changes only (an incarnation bump alone changes nothing the
        page draws). Past ``max_gossip`` records, a first contact (``alive`` for a
        pair never seen) is left out and counted; every later change is kept."""
        st = rec["status"]
        code = STATUSES.index(st) if st in STATUSES else 0
        o, m = self.lane(rec["node"]), self.lane(member_name(rec["member"]))
        key = (o, m)
        prev = self.gstatus.get(key)
        if prev == code:
            return
        self.gstatus[key] = code
        if prev is None and code == 0 and len(self.gossip) >= self.max_gossip:
            self.gossip_dropped += 1
            return
        self.gossip.append([_r(t), o, m, code])

    # -- network -------------------------------------------------------------------------

    def _addr(self, addr: str) -> str | None:
        host = addr.rpartition(":")[0] or addr
        return host if host in self.lanes else None

    def _net_send(self, rec: Record, t: float) -> None:
        src, dst = self._addr(rec["src"]), self._addr(rec["dst"])
        if src is None or dst is None:
            self.unmapped += 1
            return
        self.density_t.append(t)
        self.density_lane.append(self.lanes[src])
        i = len(self.sends)
        self.sends.append([t, None, self.lanes[src], self.lanes[dst],
                           0 if rec["kind"] == "dgram" else 1, -1])
        key = (rec["src"], rec["dst"], rec["kind"])
        self.in_flight.setdefault(key, deque()).append((i, rec["bytes"]))

    def _match(self, rec: Record, size: Any) -> list[Any] | None:
        q = self.in_flight.get((rec["src"], rec["dst"], rec["kind"]))
        if not q:
            return None
        if size is not None:
            for k, (i, b) in enumerate(q):
                if b == size:
                    del q[k]
                    return self.sends[i]
                if k > 16:
                    break
        i, _ = q.popleft()
        return self.sends[i]

    def _net_deliver(self, rec: Record, t: float) -> None:
        m = self._match(rec, rec["bytes"])
        if m is not None and m[1] is None:
            m[1] = t
            m[5] = 0

    def _net_drop(self, rec: Record, t: float) -> None:
        m = self._match(rec, None)
        if m is not None and m[1] is None:
            m[1] = t
            reason = rec["reason"]
            m[5] = 1 + (DROP_REASONS.index(reason) if reason in DROP_REASONS else 0)

    # -- result --------------------------------------------------------------------------

    def result(self, title: str) -> dict[str, Any]:
        report = self.auditor.report()
        t0 = self.t0 if self.t0 is not None else 0.0
        t1 = max(self.t1, t0)
        for node, t in self.crash_open.items():
            self.crashes.append([self.lane(node), _r(t), None])
        for node, t in self.pause_open.items():
            self.pauses.append([self.lane(node), _r(t), None])
        nodes = sorted((n for n in self.lanes if n not in self.clients), key=_natural)
        index = {n: i for i, n in enumerate(nodes)}
        remap = [index.get(n, -1) for n in self.lanes]  # builder lane -> page lane

        def lanes_of(xs: list[int]) -> list[int]:
            return [remap[x] for x in xs if remap[x] >= 0]

        msgs, sampled_every = self._messages(remap, t0)
        found = sorted((x for v in report.verdicts for x in v.violations), key=lambda x: x.t)
        violations = [
            [_r(x.t), x.check, x.text, x.where, [index[n] for n in x.nodes if n in index]]
            for x in found
        ]
        return {
            "meta": {
                "title": title,
                "t0": _r(t0),
                "t1": _r(t1),
                "records": self.records,
                "simulation": self.sim_start is not None,
                "seed": self.sim_start.get("seed") if self.sim_start else None,
                "counts": dict(sorted(self.counts.items())),
                "gossip_dropped": self.gossip_dropped,
                "messages_total": len(self.sends),
                "messages_sampled_every": sampled_every,
                "messages_unmapped": self.unmapped,
            },
            "nodes": nodes,
            "roles": [self.roles.get(n, []) for n in nodes],
            "states": [self.states.get(n, []) for n in nodes],
            "crashes": [[remap[c[0]], c[1], c[2]] for c in self.crashes if remap[c[0]] >= 0],
            "pauses": [[remap[c[0]], c[1], c[2]] for c in self.pauses if remap[c[0]] >= 0],
            "partitions": [
                [p[0], p[1], [lanes_of(g) for g in p[2]], p[3]] for p in self.partitions
            ],
            "links": self.links,
            "skews": [[remap[s[0]], *s[1:]] for s in self.skews if remap[s[0]] >= 0],
            "disks": [[remap[x[0]], *x[1:]] for x in self.disks if remap[x[0]] >= 0],
            "slow": [[remap[x[0]], *x[1:]] for x in self.slow if remap[x[0]] >= 0],
            "gossip": [
                [g[0], remap[g[1]], remap[g[2]], g[3]] for g in self.gossip
                if remap[g[1]] >= 0 and remap[g[2]] >= 0
            ],
            "maps": [
                [m[0], m[1], m[2], m[3], lanes_of(m[4]), self.proposals.get(m[1])]
                for m in sorted(self.maps.values(), key=lambda m: (m[0], m[1]))
            ],
            "node_map": [self.node_map.get(n, []) for n in nodes],
            "shares": [self.shares.get(n, []) for n in nodes] if self.shares else None,
            "msgs": msgs,
            "density": self._density(remap, len(nodes), t0, t1),
            "violations": violations,
            "checks": [[v.check, v.status, v.summary, v.count] for v in report.verdicts],
        }

    def _messages(self, remap: list[int], t0: float) -> tuple[list[Any], int]:
        sends = self.sends
        every = max(1, -(-len(sends) // self.max_messages)) if sends else 1
        out = []
        for k in range(0, len(sends), every):
            s = sends[k]
            src, dst = remap[s[2]], remap[s[3]]
            if src < 0 or dst < 0:
                continue
            out.append([_r(s[0]), None if s[1] is None else _r(s[1]), src, dst, s[4], s[5]])
        return out, every

    def _density(self, remap: list[int], lanes: int, t0: float, t1: float) -> dict[str, Any] | None:
        if not self.density_t:
            return None
        n = self.buckets
        width = (t1 - t0) / n if t1 > t0 else 1.0
        grid = [[0] * lanes for _ in range(n)]
        for t, lane in zip(self.density_t, self.density_lane, strict=True):
            b = min(n - 1, int((t - t0) / width))
            k = remap[lane]
            if k >= 0:
                grid[b][k] += 1
        return {"t0": _r(t0), "width": width, "counts": grid}


def build(records: Iterable[tuple[Record, str]], title: str, **kw: Any) -> dict[str, Any]:
    """The page's data for ``(record, where)`` pairs (see :func:`clusterfunk.audit.read`)."""
    b = ModelBuilder(**kw)
    for rec, where in records:
        b.feed(rec, where)
    return b.result(title)
