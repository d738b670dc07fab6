"""Shard-map agreement, exclusive shard ownership and routed requests.

* **Shard-map agreement** (``cluster.shardmap``): every node that applies the
  commit of the proposal at index ``I`` has the same ``digest`` and ``nodes``
  (the first ``committed`` record of ``I`` fixes them); likewise every node that
  applies the proposal at ``I``; and a commit puts its proposal in force, so the
  committed digest at ``I`` equals the proposed digest at ``I`` when both appear.
  Records re-emitted after a restart or a snapshot restore carry their original
  index and are held to the same values.
* **Exclusive ownership** (``shard.acquire`` / ``shard.release``, issue 9): a node
  serves a shard from its ``shard.acquire`` until its ``shard.release`` (or its
  ``sim.crash``: a crashed node serves nothing); a ``shard.acquire`` of a shard
  that another node serves at that moment is a violation. A paused process
  (``sim.pause`` .. ``sim.resume``) executes nothing, so it serves nothing while
  paused; but when it resumes, every shard it held that another node acquired
  meanwhile must be released at the instant it resumes (its first step, before
  it could serve anything): a later release, or none, is a violation.
* **Routed requests** (``app.request``): a request answered ``ok`` was handled by
  the node that served its shard at that moment.

The last two activate as soon as a trace holds those event names (documented in
issue 9 and, once implemented, in ``docs/trace.md``); without them the check
reports ``n/a``.
"""

from __future__ import annotations

from clusterfunk.audit.base import Check, Record, Verdict


class ShardMapAgreement(Check):
    """Every node applies the same map at a proposal index."""

    name = "shard-map agreement"
    prefixes = ("cluster.shardmap",)

    def __init__(self, limit: int = 100) -> None:
        super().__init__(limit)
        # phase -> index -> (digest, nodes, node, where)
        self.first: dict[str, dict[int, tuple[str, tuple[str, ...], str, str]]] = {
            "proposed": {}, "committed": {},
        }
        self.records = 0

    def feed(self, rec: Record, where: str) -> None:
        self.records += 1
        phase, index, node = rec["phase"], rec["index"], rec["node"]
        key = (rec["digest"], tuple(rec["nodes"]))
        table = self.first[phase]
        first = table.get(index)
        if first is None:
            table[index] = (key[0], key[1], node, where)
            other_phase = "proposed" if phase == "committed" else "committed"
            other = self.first[other_phase].get(index)
            if other is not None and other[0] != key[0]:
                self.violation(
                    rec, where,
                    f"{node}: {phase} map at {index} has digest {key[0]}, but the "
                    f"{other_phase} map at {index} has {other[0]} ({other[2]}, {other[3]})",
                    node, other[2],
                )
        elif (first[0], first[1]) != key:
            what = f"digest {key[0]}" if first[0] != key[0] else f"nodes {list(key[1])}"
            was = f"digest {first[0]}" if first[0] != key[0] else f"nodes {list(first[1])}"
            self.violation(
                rec, where,
                f"{node} applied the {phase} map at {index} with {what}, but {first[2]} "
                f"applied {was} ({first[3]})",
                node, first[2],
            )

    def verdict(self) -> Verdict:
        c, p = len(self.first["committed"]), len(self.first["proposed"])
        return self._done(
            self.records > 0,
            f"{self.records} cluster.shardmap records: {c} committed maps, {p} proposals"
            if self.records else "no cluster.shardmap events",
        )


class ShardOwnership(Check):
    """No shard served by two nodes at once; ``ok`` requests handled by the owner."""

    name = "shard ownership"
    prefixes = ("shard.", "app.request", "sim.crash", "sim.pause", "sim.resume")

    def __init__(self, limit: int = 100) -> None:
        super().__init__(limit)
        self.serving: dict[int, set[str]] = {}  # shard -> nodes serving it now
        self.by_node: dict[str, set[int]] = {}
        self.acquires = 0
        self.releases = 0
        self.requests = 0
        self.frozen: dict[str, set[int]] = {}  # paused node -> the shards it held
        #: resumed node -> (resume time, shards others acquired while it was paused)
        self.owing: dict[str, tuple[float, set[int], str]] = {}

    def feed(self, rec: Record, where: str) -> None:
        ev = rec["ev"]
        if self.owing:
            self._settle(rec["t"])
        if ev == "shard.acquire":
            self._acquire(rec, where)
        elif ev == "shard.release":
            self.releases += 1
            node = rec["node"]
            mine = self.by_node.setdefault(node, set())
            for s in rec["shards"]:
                mine.discard(s)
                holders = self.serving.get(s)
                if holders is not None:
                    holders.discard(node)
        elif ev == "app.request":
            self._request(rec, where)
        elif ev == "sim.crash":
            node = rec["target"]
            self.frozen.pop(node, None)
            self.owing.pop(node, None)
            for s in self.by_node.pop(node, set()):
                self.serving.get(s, set()).discard(node)
        elif ev == "sim.pause":
            node = rec["target"]
            held = self.by_node.get(node, set())
            self.frozen[node] = set(held)
            for s in held:
                self.serving.get(s, set()).discard(node)
        elif ev == "sim.resume":
            self._resume(rec, where)

    def _resume(self, rec: Record, where: str) -> None:
        """The node runs again with what it held: shards others acquired meanwhile
        it must release at once (checked by :meth:`_settle`)."""
        node = rec["target"]
        held = self.frozen.pop(node, None)
        if held is None:
            return
        taken: set[int] = set()
        for s in held:
            if s not in self.by_node.get(node, set()):
                continue  # released before the pause
            holders = self.serving.setdefault(s, set())
            if holders - {node}:
                taken.add(s)
            holders.add(node)
        if taken:
            self.owing[node] = (rec["t"], taken, where)

    def _settle(self, now: float) -> None:
        """A resumed node still holding shards that others own once time moved past
        its resume instant: it kept serving them."""
        for node, (t, shards, where) in list(self.owing.items()):
            still = {s for s in shards if s in self.by_node.get(node, set())}
            if not still:
                del self.owing[node]
            elif now > t:
                del self.owing[node]
                shown = ", ".join(map(str, sorted(still)[:10]))
                self.violation(
                    {"t": t, "node": node}, where,
                    f"{node} resumed at t={t} still serving {len(still)} shard(s) that "
                    f"others acquired while it was paused, and did not release them at "
                    f"once: {shown}",
                    node,
                )

    def _acquire(self, rec: Record, where: str) -> None:
        self.acquires += 1
        node = rec["node"]
        mine = self.by_node.setdefault(node, set())
        clashes: dict[str, list[int]] = {}
        for s in rec["shards"]:
            holders = self.serving.setdefault(s, set())
            for other in holders:
                if other != node:
                    clashes.setdefault(other, []).append(s)
            holders.add(node)
            mine.add(s)
        for other in sorted(clashes):
            shards = sorted(clashes[other])
            shown = ", ".join(map(str, shards[:10])) + (" ..." if len(shards) > 10 else "")
            self.violation(
                rec, where,
                f"{node} acquired {len(shards)} shard(s) at map index {rec['index']} that "
                f"{other} still serves: {shown}",
                node, other,
            )

    def _request(self, rec: Record, where: str) -> None:
        self.requests += 1
        if rec["outcome"] != "ok":
            return
        node, shard = rec["node"], rec["shard"]
        if node not in self.serving.get(shard, ()):
            owners = sorted(self.serving.get(shard, ()))
            self.violation(
                rec, where,
                f"{node} answered ok to request {rec['id']!r} of {rec['client']} for shard "
                f"{shard}, which it does not serve (served by {owners or 'nobody'})",
                node,
            )

    def verdict(self) -> Verdict:
        if self.owing:
            self._settle(float("inf"))
        active = self.acquires + self.releases + self.requests > 0
        return self._done(
            active,
            f"{self.acquires} acquires, {self.releases} releases, {self.requests} requests"
            if active else "no shard.acquire/shard.release/app.request events (issue 9)",
        )
