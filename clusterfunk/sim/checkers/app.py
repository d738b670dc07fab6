"""Checks of a sharded application run (``simulate --protocol cluster --app demo``),
from trace records only.

Inputs (see ``docs/trace.md``): ``shard.acquire`` / ``shard.release`` (a node starts /
stops serving shards), ``app.request`` (a node answered one request attempt),
``client.call`` / ``client.request`` (a simulated client starts / ends one request),
and the simulator's ``sim.crash`` / ``sim.pause`` / ``sim.resume``.

The properties (issue 9), each counted in :meth:`AppChecker.summary`:

(a) **exclusive ownership** and (b) **ok requests handled by the owner**: the
    offline audit's :class:`clusterfunk.audit.shards.ShardOwnership` check, fed
    online with the same records (one implementation for both). Its violations
    raised while reading an ``app.request`` count as ``misrouted``, the others as
    ``ownership_violations``.
(c) **no acknowledged write lost** (the demo counters, ``clusterfunk.demo.kv``):
    per key, in real time. When a request starts (``client.call``), it notes the
    *floor*: the largest value any request on that key had acknowledged
    (``client.request`` ok) by then. An ok ``incr`` must return more than its floor
    and an ok ``get`` at least its floor; two ok ``incr`` on one key never return
    the same value. Otherwise a write was lost: one violation per incident (the
    key is judged from the value seen on). The one allowed loss, a *reset*: the
    demo keeps its state in memory, so a node that crashes while it holds a
    shard's state -- it serves the shard, or it was the last to acquire it, or the
    shard is released and not yet acquired (state in transit: the crash of *any*
    node then counts, since the trace does not say where the state travels) --
    destroys it. A request that ran across such a crash sets no floor, and a floor
    from before it binds no later request; ``resets_after_crash`` counts keys seen
    lower after one. Lost writes are reported in two counts:
    ``lost_writes_holder_cut_off`` when, since the floor was acknowledged, the shard
    was acquired by a node while its previous holder -- the node its state was at:
    the last to acquire it, or the last it was handed to (``app.handoff``) --,
    alive, was not in the map of that commit (paused or partitioned away and
    dropped from the map: its state
    could not be handed over, and it is dropped when it arrives late), or the
    state reached the acquiring node by a handoff from a node not in that map (the
    dropped holder applied the map late and handed its state over while the new
    owner, which does not wait for state from a dropped holder, acquired the shard:
    state arriving after the acquire is dropped as late), else
    ``lost_writes``. The first is the *take-over rule*, an allowed loss like a
    crash: the cluster declared the holder failed, and the demo keeps a shard's
    state in that one process only (docs/demo.md); only ``lost_writes`` are
    violations -- a write lost in a handoff between nodes the map keeps. Keys
    written with ``put`` are not checked (the workload sends only ``incr`` and
    ``get``).
(d) **every request ends within its deadline**: each ``client.call`` is followed by
    one ``client.request`` of the same ``client`` and ``id``, no later than the
    call's ``t`` plus its ``deadline``, with outcome ``ok`` or ``failed`` and a
    non-empty ``error`` (the clear error; failures are counted by ``reason``). A
    request still open at the end of the run is a violation if its deadline passed,
    else counted as ``open_at_end``.
"""

from __future__ import annotations

from typing import Any

import attrs

from clusterfunk.audit.base import Record
from clusterfunk.audit.shards import ShardOwnership

#: Slack for the deadline check: trace times are rounded to microseconds.
EPS = 2e-6


@attrs.define
class _Call:
    t: float
    deadline: float
    key: int
    shard: int
    op: str
    floor: int | None  # the largest acked value on key at the call (this crash epoch)
    epoch: int  # the shard's crash epoch at the call
    floor_cut: int  # the shard's cut-off epoch when the floor was acknowledged
    generation: int  # lost-write incidents on the key before the call


@attrs.define
class _Acked:
    value: int
    epoch: int  # crash epoch
    cut: int  # cut-off epoch


class AppChecker:
    """Trace listener for properties (a)-(d) of the module docstring."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.ownership = ShardOwnership(limit)
        self.problems: list[str] = []
        #: allowed losses (the take-over rule), for the record: not violations
        self.takeover_losses: list[str] = []
        self.counts = {"ownership_violations": 0, "misrouted": 0, "lost_writes": 0,
                       "lost_writes_holder_cut_off": 0, "late": 0, "unclear_errors": 0,
                       "unmatched": 0}
        self.requests = 0  # client requests started
        self.finished = 0
        self.ok = 0
        self.errors: dict[str, int] = {}  # failed requests by reason
        self.attempts: dict[str, int] = {}  # app.request outcomes at the nodes
        self.resets = 0  # keys seen lower after an allowed state loss (crash)
        self.latencies: list[float] = []  # ok requests, seconds
        self.open: dict[tuple[str, Any], _Call] = {}
        # per shard: the crash epoch (bumped when its state may have been destroyed by
        # a crash) and the cut-off epoch (bumped when another node took it over from
        # a live holder that was removed from the map)
        self.epoch: dict[int, int] = {}
        self.cut: dict[int, int] = {}
        #: shard -> the node its state is at: the last that acquired it, or the last
        #: one it was handed to (``app.handoff``) since
        self.holder: dict[int, str] = {}
        #: shard -> the sender of the handoff that made ``holder`` its holder (until
        #: the next acquire)
        self.handed_by: dict[int, str] = {}
        self.in_transit: set[int] = set()  # released, not acquired since
        self.by_node: dict[str, set[int]] = {}
        self.map_nodes: dict[int, frozenset[str]] = {}  # committed map index -> nodes
        self.acked: dict[int, _Acked] = {}  # key -> the largest acked value
        self.incr_results: dict[int, set[tuple[int, int]]] = {}  # key -> {(value, epoch)}
        self.unchecked: set[int] = set()  # keys written with put
        self.incidents: dict[int, int] = {}  # key -> lost-write incidents so far
        self.now = 0.0

    # -- feed --------------------------------------------------------------------

    def __call__(self, rec: Record) -> None:
        ev = rec["ev"]
        self.now = rec["t"]
        if ev.startswith("client."):
            if ev == "client.call":
                self._call(rec)
            elif ev == "client.request":
                self._done(rec)
            return
        if ev == "cluster.shardmap":
            if rec["phase"] == "committed" and rec["index"] not in self.map_nodes:
                self.map_nodes[rec["index"]] = frozenset(rec["nodes"])
            return
        if ev == "app.handoff":
            for s in rec["shards"]:
                self.holder[s] = rec["to"]  # the shard's state now lives there
                self.handed_by[s] = rec["node"]
            return
        if ev in ("shard.acquire", "shard.release", "app.request", "sim.crash",
                  "sim.pause", "sim.resume"):
            before = self.ownership.count
            self.ownership.feed(rec, f"t={rec['t']}")
            new = self.ownership.count - before
            if new:
                what = "misrouted" if ev == "app.request" else "ownership_violations"
                self.counts[what] += new
            if ev == "shard.acquire":
                self._acquire(rec)
            elif ev == "shard.release":
                self._release(rec)
            elif ev == "sim.crash":
                self._crash(rec["target"])
            elif ev == "app.request":
                o = rec["outcome"]
                self.attempts[o] = self.attempts.get(o, 0) + 1

    def _problem(self, what: str, text: str) -> None:
        self.counts[what] += 1
        if len(self.problems) < self.limit:
            self.problems.append(text)

    # -- state epochs ------------------------------------------------------------

    def _acquire(self, rec: Record) -> None:
        node = rec["node"]
        mine = self.by_node.setdefault(node, set())
        nodes = self.map_nodes.get(rec["index"])
        for s in rec["shards"]:
            prev = self.holder.get(s)
            sender = self.handed_by.pop(s, None)
            if nodes is not None and prev is not None and (
                    (prev != node and prev not in nodes)
                    or (prev == node and sender is not None and sender not in nodes)):
                # taken over from a live holder the map dropped (paused, cut off): its
                # state cannot have been handed over -- or it was handed over, but by
                # a node this map dropped, so nothing made the taker wait for it, and
                # state that arrives after the acquire is dropped as late
                self.cut[s] = self.cut.get(s, 0) + 1
            self.holder[s] = node
            self.in_transit.discard(s)
            mine.add(s)

    def _release(self, rec: Record) -> None:
        mine = self.by_node.setdefault(rec["node"], set())
        for s in rec["shards"]:
            mine.discard(s)
            self.in_transit.add(s)

    def _crash(self, node: str) -> None:
        lost = self.by_node.pop(node, set()) | self.in_transit
        lost |= {s for s, h in self.holder.items() if h == node}
        for s in lost:
            self.epoch[s] = self.epoch.get(s, 0) + 1
            if self.holder.get(s) == node:
                del self.holder[s]  # its state is gone: nothing to take over

    # -- client requests ---------------------------------------------------------

    def _call(self, rec: Record) -> None:
        self.requests += 1
        key, shard = rec["key"], rec["shard"]
        epoch = self.epoch.get(shard, 0)
        acked = self.acked.get(key)
        floor, floor_cut = None, 0
        if acked is not None and acked.epoch == epoch:
            floor, floor_cut = acked.value, acked.cut
        ident = (rec["client"], rec["id"])
        if ident in self.open:
            self._problem("unmatched", f"t={rec['t']}: {ident} started twice")
        self.open[ident] = _Call(rec["t"], rec["deadline"], key, shard, rec["op"], floor,
                                 epoch, floor_cut, self.incidents.get(key, 0))

    def _done(self, rec: Record) -> None:
        ident = (rec["client"], rec["id"])
        call = self.open.pop(ident, None)
        t = rec["t"]
        if call is None:
            self._problem("unmatched", f"t={t}: {ident} ended without a client.call")
            return
        self.finished += 1
        if t > call.t + call.deadline + EPS:
            self._problem("late", f"t={t}: {ident} ended {t - call.t:.6f} s after its "
                                  f"call, past its deadline of {call.deadline} s")
        if rec["outcome"] == "ok":
            self.ok += 1
            self.latencies.append(t - call.t)
            self._check_value(ident, call, rec["result"], t)
            return
        if rec["outcome"] != "failed" or not rec.get("error"):
            self._problem("unclear_errors", f"t={t}: {ident} ended {rec['outcome']!r} "
                                            f"without an error message")
        reason = str(rec.get("reason") or "unknown")
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _lost(self, call: _Call, text: str) -> None:
        """One lost-write incident; the key is judged from the value seen now on."""
        if self.cut.get(call.shard, 0) != call.floor_cut:
            # the take-over rule: an allowed loss, counted (module docstring)
            self.counts["lost_writes_holder_cut_off"] += 1
            if len(self.takeover_losses) < self.limit:
                holder = "a live holder the map dropped (paused or cut off)"
                self.takeover_losses.append(
                    f"{text}, after the shard was taken over from {holder}")
        else:
            self._problem("lost_writes", text)

    def _check_value(self, ident: tuple[str, Any], call: _Call, value: int, t: float) -> None:
        key, shard = call.key, call.shard
        if call.op == "put":
            self.unchecked.add(key)
        if key in self.unchecked:
            return
        epoch = self.epoch.get(shard, 0)
        cut = self.cut.get(shard, 0)
        acked = self.acked.get(key)
        if epoch != call.epoch:
            return  # a crash may have destroyed the state while it ran: no check, no floor
        if self.incidents.get(key, 0) != call.generation:
            return  # a loss on this key was reported while it ran: judged from then on
        seen = self.incr_results.setdefault(key, set())
        lost = ""
        if call.floor is not None and (
                value <= call.floor if call.op == "incr" else value < call.floor):
            lost = (f"t={t}: {ident} {call.op} of key {key} (shard {shard}) returned "
                    f"{value}, but {call.floor} was acknowledged before it started and no "
                    f"holder of the shard's state crashed since")
        elif call.op == "incr" and (value, epoch) in seen:
            lost = (f"t={t}: {ident} incr of key {key} (shard {shard}) returned {value}, "
                    f"as an earlier incr did")
        if lost:
            self._lost(call, lost)
            self.incidents[key] = self.incidents.get(key, 0) + 1
            self.acked[key] = _Acked(value, epoch, cut)
            seen.clear()
            if call.op == "incr":
                seen.add((value, epoch))
            return
        if call.op == "incr":
            seen.add((value, epoch))
        if acked is not None and acked.epoch != epoch and value < acked.value:
            self.resets += 1  # the first value seen after an allowed state loss
        if acked is None or acked.epoch != epoch or value > acked.value:
            self.acked[key] = _Acked(value, epoch, cut)

    # -- end of run --------------------------------------------------------------

    def finish(self, now: float) -> None:
        """At the end of the run: requests still open past their deadline."""
        for ident, call in sorted(self.open.items(), key=lambda kv: (kv[1].t, str(kv[0]))):
            if now > call.t + call.deadline + EPS:
                self._problem("late", f"{ident} started at t={call.t} never ended "
                                      f"(deadline {call.deadline} s)")

    def violations(self) -> list[str]:
        own = [x.line() for x in self.ownership.violations]
        return own + list(self.problems)

    def summary(self, now: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 6) if lat else None

        open_ok = sum(1 for c in self.open.values() if now <= c.t + c.deadline + EPS)
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.finished - self.ok,
            "errors": dict(sorted(self.errors.items())),
            "open_at_end": open_ok,
            "attempts": dict(sorted(self.attempts.items())),
            "misrouted": self.counts["misrouted"],
            "ownership_violations": self.counts["ownership_violations"],
            "lost_writes": self.counts["lost_writes"],
            "lost_writes_holder_cut_off": self.counts["lost_writes_holder_cut_off"],
            "late": self.counts["late"],
            "unclear_errors": self.counts["unclear_errors"],
            "resets_after_crash": self.resets,
            "latency_p50_s": pct(0.5),
            "latency_p99_s": pct(0.99),
        }
