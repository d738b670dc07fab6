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
    the same value. A request that ran while its shard's state may have been
    destroyed sets no floor, and a floor from before such an event binds no later
    request: the demo keeps its state in memory, so it is lost -- a *reset*, allowed
    -- when a node crashes while it holds the state: it serves the shard, or it
    released the shard and nobody acquired it since (the state is in transit; the
    crash of *any* node in that window counts, since the trace does not say where
    the state travels). Anything else that lowers a counter is a ``lost_writes``
    violation. Keys written with ``put`` are not checked (the workload sends only
    ``incr`` and ``get``).
(d) **every request ends within its deadline**: each ``client.call`` is followed by
    one ``client.request`` of the same ``client`` and ``id``, no later than the
    call's ``t`` plus its ``deadline``, with outcome ``ok`` or ``failed`` and a
    non-empty ``error`` (the clear error). A request still open at the end of the
    run is a violation if its deadline passed, else counted as ``open_at_end``.
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
    floor: int | None  # the largest acked value on key at the call (this epoch)
    epoch: int  # the shard's state epoch at the call


class AppChecker:
    """Trace listener for properties (a)-(d) of the module docstring."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.ownership = ShardOwnership(limit)
        self.problems: list[str] = []
        self.counts = {"ownership_violations": 0, "misrouted": 0, "lost_writes": 0,
                       "late": 0, "unclear_errors": 0, "unmatched": 0}
        self.requests = 0  # client requests started
        self.finished = 0
        self.ok = 0
        self.errors: dict[str, int] = {}  # failed requests by reason
        self.attempts: dict[str, int] = {}  # app.request outcomes at the nodes
        self.resets = 0  # keys seen lower after an allowed state loss (crash)
        self.latencies: list[float] = []  # ok requests, seconds
        self.open: dict[tuple[str, Any], _Call] = {}
        # state epochs: bumped whenever a shard's state may have been destroyed
        self.epoch: dict[int, int] = {}
        self.serving: dict[int, set[str]] = {}
        self.in_transit: set[int] = set()  # released, not acquired since
        self.by_node: dict[str, set[int]] = {}
        # key -> (largest acked value, epoch of that ack); keys written with put
        self.acked: dict[int, tuple[int, int]] = {}
        self.incr_results: dict[int, set[tuple[int, int]]] = {}  # key -> {(value, epoch)}
        self.unchecked: set[int] = set()
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
        for s in rec["shards"]:
            self.serving.setdefault(s, set()).add(node)
            self.in_transit.discard(s)
            mine.add(s)

    def _release(self, rec: Record) -> None:
        node = rec["node"]
        mine = self.by_node.setdefault(node, set())
        for s in rec["shards"]:
            holders = self.serving.get(s)
            if holders is not None:
                holders.discard(node)
            mine.discard(s)
            self.in_transit.add(s)

    def _crash(self, node: str) -> None:
        lost = self.by_node.pop(node, set()) | self.in_transit
        for s in lost:
            self.epoch[s] = self.epoch.get(s, 0) + 1
            self.serving.get(s, set()).discard(node)

    # -- client requests ---------------------------------------------------------

    def _call(self, rec: Record) -> None:
        self.requests += 1
        key, shard = rec["key"], rec["shard"]
        epoch = self.epoch.get(shard, 0)
        acked = self.acked.get(key)
        floor = acked[0] if acked is not None and acked[1] == epoch else None
        ident = (rec["client"], rec["id"])
        if ident in self.open:
            self._problem("unmatched", f"t={rec['t']}: {ident} started twice")
        self.open[ident] = _Call(rec["t"], rec["deadline"], key, shard, rec["op"], floor,
                                 epoch)

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
        reason = rec.get("error") or ""
        if rec["outcome"] != "failed" or not reason:
            self._problem("unclear_errors", f"t={t}: {ident} ended {rec['outcome']!r} "
                                            f"without a reason")
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _check_value(self, ident: tuple[str, Any], call: _Call, value: int, t: float) -> None:
        key = call.key
        if call.op == "put":
            self.unchecked.add(key)
        if key in self.unchecked:
            return
        epoch = self.epoch.get(call.shard, 0)
        lost = False
        if call.floor is not None:
            low = value <= call.floor if call.op == "incr" else value < call.floor
            if low and epoch == call.epoch:
                lost = True
                self._problem(
                    "lost_writes",
                    f"t={t}: {ident} {call.op} of key {key} (shard {call.shard}) "
                    f"returned {value}, but {call.floor} was acknowledged before it "
                    f"started and no holder of the shard's state crashed since",
                )
        if epoch != call.epoch:
            return  # it may have read state destroyed since: it sets no floor
        if call.op == "incr":
            seen = self.incr_results.setdefault(key, set())
            if (value, epoch) in seen and not lost:  # one violation per request
                self._problem("lost_writes", f"t={t}: {ident} incr of key {key} returned "
                                             f"{value}, as an earlier incr did")
            seen.add((value, epoch))
        acked = self.acked.get(key)
        if acked is not None and acked[1] != epoch and value < acked[0]:
            self.resets += 1  # the first value seen after an allowed state loss
        if acked is None or acked[1] != epoch or value > acked[0]:
            self.acked[key] = (value, epoch)

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
            "late": self.counts["late"],
            "unclear_errors": self.counts["unclear_errors"],
            "resets_after_crash": self.resets,
            "latency_p50_s": pct(0.5),
            "latency_p99_s": pct(0.99),
        }
