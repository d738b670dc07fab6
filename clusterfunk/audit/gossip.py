"""Gossip false positives against the simulator's fault windows.

A **false positive** is a ``gossip.member`` record with ``status == "dead"``
about a member ``x`` at time ``t`` while ``x`` was up and undisturbed: not
crashed (``sim.crash`` .. ``sim.restart``), not paused (``sim.pause`` ..
``sim.resume``), no partition active (``sim.partition`` .. ``sim.heal``), and
none of these ended within ``grace`` seconds before ``t`` (a verdict still in
flight from an earlier fault is not blamed on the protocol). Members are up from
``sim.start`` / ``sim.add``.

The grace is the detection bound of ``docs/gossip.md`` /
``clusterfunk simulate --protocol gossip``, computed from the number of nodes in
``sim.start`` (plus ``sim.add``) and a gossip profile's timing::

    bound = (n + 1) x probe_interval
          + suspicion_max_timeout_mult x suspicion_mult x max(1, log10 n) x probe_interval
          + 10 x gossip_interval x ceil(log10(n + 1))
          + 2 x probe_interval

The profile is not in the trace: ``--gossip-profile`` (default ``lan``) or
``--grace SECONDS`` say it. A trace without ``sim.start`` (a real process) has no
fault windows, so nothing can be said about whether a member was really down:
the check reports ``n/a`` there.
"""

from __future__ import annotations

import math

from clusterfunk.audit.base import Check, Record, Verdict, member_name

#: The timing of the gossip profiles (docs/gossip.md; ``clusterfunk.gossip.config``):
#: probe_interval, suspicion_mult, suspicion_max_timeout_mult, gossip_interval.
PROFILES: dict[str, tuple[float, int, int, float]] = {
    "lan": (1.0, 4, 6, 0.2),
    "wan": (5.0, 6, 6, 0.5),
    "local": (1.0, 3, 6, 0.1),
}


def detection_bound(profile: str, n: int) -> float:
    """The documented crash -> dead bound for ``n`` members (module docstring)."""
    pi, smult, smax, gi = PROFILES[profile]
    suspicion_max = smax * smult * max(1.0, math.log10(max(n, 1))) * pi
    spread = 10 * gi * math.ceil(math.log10(n + 1))
    return (n + 1) * pi + suspicion_max + spread + 2 * pi


class FalsePositives(Check):
    """No live, undisturbed member declared dead (see the module docstring)."""

    name = "gossip false positives"
    prefixes = ("gossip.member", "sim.")

    def __init__(
        self, limit: int = 100, *, grace: float | None = None, profile: str = "lan"
    ) -> None:
        super().__init__(limit)
        self.fixed_grace = grace
        self.profile = profile
        self.grace = 0.0 if grace is None else grace
        self.simulation = False
        self.members: list[str] = []
        self.up: dict[str, bool] = {}
        self.paused: set[str] = set()
        self.excused_until: dict[str, float] = {}
        self.partition = False
        self.partition_excused_until = -math.inf
        self.dead_claims = 0
        self.records = 0

    def _regrace(self) -> None:
        if self.fixed_grace is None:
            self.grace = detection_bound(self.profile, len(self.up))

    def feed(self, rec: Record, where: str) -> None:
        ev, t = rec["ev"], rec["t"]
        if ev == "gossip.member":
            self.records += 1
            if rec["status"] != "dead" or not self.simulation:
                return
            self.dead_claims += 1
            x = member_name(rec["member"])
            if not self.up.get(x, False) or x in self.paused or self.partition:
                return
            if t <= self.excused_until.get(x, -math.inf) or t <= self.partition_excused_until:
                return
            self.violation(
                rec, where,
                f"{rec['node']} declared {x} dead (incarnation {rec['incarnation']}) while "
                f"{x} was up and no fault touched it in the last {self.grace:.1f} s",
                rec["node"], x,
            )
        elif ev == "sim.start":
            self.simulation = True
            for n in rec["nodes"]:
                self.up[n] = True
            self._regrace()
        elif ev == "sim.add":
            self.up[rec["target"]] = True
            self._regrace()
        elif ev == "sim.crash":
            self.up[rec["target"]] = False
        elif ev == "sim.restart":
            self.up[rec["target"]] = True
            self.excused_until[rec["target"]] = t + self.grace
        elif ev == "sim.pause":
            self.paused.add(rec["target"])
        elif ev == "sim.resume":
            self.paused.discard(rec["target"])
            self.excused_until[rec["target"]] = t + self.grace
        elif ev == "sim.partition":
            self.partition = True
        elif ev == "sim.heal":
            self.partition = False
            self.partition_excused_until = t + self.grace

    def verdict(self) -> Verdict:
        if not self.records:
            return self._done(False, "no gossip.member events")
        if not self.simulation:
            return self._done(
                False, f"{self.records} gossip.member records, but no sim.* fault windows "
                "(a real-process trace): not checked",
            )
        how = "--grace" if self.fixed_grace is not None else f"{self.profile} profile bound"
        return self._done(
            True,
            f"{self.dead_claims} dead verdicts among {self.records} gossip.member records, "
            f"grace {self.grace:.1f} s ({how}, {len(self.up)} nodes)",
        )
